"""A tiny random vision-language chat model (LLaVA architecture), built in-process (no hub), for tests.

`LlavaForConditionalGeneration` with a toy CLIP vision tower and a toy Llama, and a `LlavaProcessor` a real
llava-hf folder has the parts of: a `CLIPImageProcessor`, a fast tokenizer with an `<image>` token (a
word-level vocabulary written here: the tinyworld words and those of the default prompts) and a
LLaVA-1.5-style chat template. Its replies are random words, but exact, which is what the tests compare
against transformers' own `generate()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodegraph_multimodal.tiny_models import IMAGE_SIZE, WORDS

# the words of the default instruction and of the chat roles, besides the tinyworld ones
CHAT_WORDS = ("describe this one sentence user assistant :").split()
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
IMAGE_TOKEN = "<image>"
PATCH_SIZE = 8
# LLaVA-1.5's layout ("USER: <image>\n... ASSISTANT:"), image parts before text parts as users send them
CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'].upper() }}: "
                 "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
                 "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %} "
                 "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def tiny_chat_tokenizer() -> Any:
    """A word-level fast tokenizer (lower-cased, split on whitespace and punctuation) with `<image>`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({*WORDS, *CHAT_WORDS})
    vocab = {w: i for i, w in enumerate([*SPECIALS, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>",
                                   extra_special_tokens={"image_token": IMAGE_TOKEN})


def build_tiny_llava(folder: Path, seed: int = 0) -> Path:
    """A random `LlavaForConditionalGeneration` + `LlavaProcessor` (32 px images, 16 image tokens, chat
    template) saved in `folder`."""
    import torch
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = tiny_chat_tokenizer()
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 37,
              "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": IMAGE_SIZE,
              "patch_size": PATCH_SIZE}
    text = {"model_type": "llama", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 37,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 128, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(
        IMAGE_TOKEN), vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    images = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    # "default" drops the CLS feature; num_additional_image_tokens=1 counts it: 16 patches -> 16 tokens
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
