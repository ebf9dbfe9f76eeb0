"""Tiny random vision-language models (LLaVA, Idefics3, PaliGemma architectures), built in-process (no hub).

`LlavaForConditionalGeneration` (a toy CLIP vision tower and a toy Llama) with a `LlavaProcessor`, and
`Idefics3ForConditionalGeneration` (SmolVLM-Instruct's architecture: a toy SigLIP-style tower, pixel
shuffle, a toy Llama) with an `Idefics3Processor`: the parts a real folder has — an image processor, a
fast tokenizer with the image tokens (a word-level vocabulary written here: the tinyworld words and those
of the default prompts) and a chat template in the layout of the real models'; and
`PaliGemmaForConditionalGeneration` (a toy SigLIP tower and a toy Gemma) with a `PaliGemmaProcessor` and,
as google's folders, no chat template (it is prompted with task text: "caption en"). Their replies are
random words, but exact, which is what the tests compare against transformers' own `generate()`.
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
IDEFICS3_TOKENS = ("<|im_start|>", "<fake_token_around_image>", IMAGE_TOKEN, "<end_of_utterance>",
                   "<global-img>")
# SmolVLM-Instruct's layout ("<|im_start|>User:<image>...<end_of_utterance>\nAssistant:")
IDEFICS3_TEMPLATE = ("<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
                     "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}"
                     "{% else %}{{ ': ' }}{% endif %}"
                     "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
                     "{% elif item['type'] == 'image' %}<image>{% endif %}{% endfor %}<end_of_utterance>\n"
                     "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")
# LLaVA-1.5's layout ("USER: <image>\n... ASSISTANT:"), image parts before text parts as users send them
CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'].upper() }}: "
                 "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
                 "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %} "
                 "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def tiny_chat_tokenizer(special: tuple[str, ...] = (), eos: str = "</s>", words: tuple[str, ...] = ()) -> Any:
    """A word-level fast tokenizer (lower-cased, split on whitespace and punctuation) with `<image>` and
    the model's other `special` tokens (and extra `words`)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*SPECIALS, *sorted({*WORDS, *CHAT_WORDS, *words})])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([IMAGE_TOKEN, *(t for t in special if t != IMAGE_TOKEN)])  # never split
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token=eos,
                                   extra_special_tokens={"image_token": IMAGE_TOKEN})


def _tiny_llama(tok: Any) -> dict[str, Any]:
    """The toy Llama language model of both VLMs, over the tokenizer's vocabulary."""
    return {"model_type": "llama", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 37,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 128, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def _tiny_vision(**extra: Any) -> dict[str, Any]:
    return {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, **extra}


def build_tiny_llava(folder: Path, seed: int = 0) -> Path:
    """A random `LlavaForConditionalGeneration` + `LlavaProcessor` (32 px images, 16 image tokens, chat
    template) saved in `folder`."""
    import torch
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = tiny_chat_tokenizer()
    config = LlavaConfig(vision_config=_tiny_vision(model_type="clip_vision_model"),
                         text_config=_tiny_llama(tok), image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
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


def build_tiny_idefics3(folder: Path, seed: int = 0) -> Path:
    """A random `Idefics3ForConditionalGeneration` + `Idefics3Processor` (32 px images, not split; 16
    patches pixel-shuffled into 4 image tokens; SmolVLM's chat layout) saved in `folder`."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tok = tiny_chat_tokenizer(IDEFICS3_TOKENS, eos="<end_of_utterance>")
    scale = 2
    config = Idefics3Config(vision_config=_tiny_vision(), text_config=_tiny_llama(tok), scale_factor=scale,
                            image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN))
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    images = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
                                       max_image_size={"longest_edge": IMAGE_SIZE})
    tokens_per_image = (IMAGE_SIZE // PATCH_SIZE) ** 2 // scale**2
    processor = Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=tokens_per_image,
                                  chat_template=IDEFICS3_TEMPLATE)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_paligemma(folder: Path, seed: int = 0) -> Path:
    """A random `PaliGemmaForConditionalGeneration` + `PaliGemmaProcessor` (32 px, 16 image tokens; the
    processor adds PaliGemma's 1,152 location/segmentation tokens) saved in `folder`, without a chat
    template, as google's PaliGemma folders are."""
    import torch
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
    )

    tok = tiny_chat_tokenizer(words=("caption", "answer", "en"))
    images = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    images.image_seq_length = (IMAGE_SIZE // PATCH_SIZE) ** 2  # saved with it, as google's configs have it
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tok)  # adds its tokens to `tok`
    text = {**_tiny_llama(tok), "model_type": "gemma", "num_key_value_heads": 1, "head_dim": 8}
    config = PaliGemmaConfig(vision_config=_tiny_vision(projection_dim=32), text_config=text,
                             image_token_index=processor.image_token_id, projection_dim=32, hidden_size=32,
                             vocab_size=len(tok), tie_word_embeddings=False)  # tied: replies echo the prompt
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# the words of Florence-2's task prompts ("<MORE_DETAILED_CAPTION>" -> "Describe with a paragraph ...")
FLORENCE2_WORDS = ("locate", "objects", "paragraph", "shown", "with", "name", "detail", "does", "describe")


def build_tiny_florence2(folder: Path, seed: int = 0) -> Path:
    """A random `Florence2ForConditionalGeneration` (a two-stage toy DaViT tower, a toy BART encoder-decoder)
    + `Florence2Processor` (32 px: 4x4 features + 1 pooled = 17 image tokens) saved in `folder`, without a
    chat template, as Florence-2 folders are: it is prompted with task tokens."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    tok = tiny_chat_tokenizer(words=FLORENCE2_WORDS)
    images = CLIPImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False)
    images.image_seq_length = (IMAGE_SIZE // 8) ** 2 + 1  # stride 4 x 2; + the pooled (temporal) token
    processor = Florence2Processor(image_processor=images, tokenizer=tok)
    vision = {"depths": (1, 1), "patch_size": (7, 3), "patch_stride": (4, 2), "patch_padding": (3, 1),
              "patch_prenorm": (False, True), "embed_dim": (16, 32), "num_heads": (2, 4),
              "num_groups": (2, 4), "window_size": 2, "projection_dim": 32, "max_position_embeddings": 8,
              "drop_path_rate": 0.0}
    text = {"vocab_size": len(tok), "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
            "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 37,
            "decoder_ffn_dim": 37, "max_position_embeddings": 128, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
            "decoder_start_token_id": tok.eos_token_id, "forced_bos_token_id": None,
            "forced_eos_token_id": None, "init_std": 0.2}  # BART's 0.02: replies would ignore the prompt
    config = Florence2Config(vision_config=vision, text_config=text, image_token_id=processor.image_token_id,
                             tie_word_embeddings=False)  # tied: a random model stops at once
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
