"""Tiny random CLIP and BLIP folders, built in-process (no hub), for tests and the offline demo graphs.

They have the real architectures (transformers' `CLIPModel`, `BlipForConditionalGeneration`,
`BlipForQuestionAnswering`) at toy widths, with processors a real folder has: CLIP reuses the built-in
tinyworld CLIP tokenizer, BLIP a `BertTokenizer` over a small word vocabulary written here. Their
outputs are random but exact, which is what the tests compare against the libraries.
"""

from __future__ import annotations

from pathlib import Path

# the words of the tinyworld captions, so BLIP's tokenizer knows the demo prompts
WORDS = ("a an the of in on at to is what colour shape size small big circle square triangle person "
         "shirt pants and left right top bottom center background red green blue yellow orange purple "
         "pink cyan white black picture photo image there , . ?").split()
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")
IMAGE_SIZE = 32


def _tiny_vision() -> dict[str, int]:
    return {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": IMAGE_SIZE, "patch_size": 8}


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random `CLIPModel` + `CLIPProcessor` (32 px images, tinyworld tokenizer) saved in `folder`."""
    import torch
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(BUILTIN_DIR / "tinyworld" / "tokenizer")
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    config = CLIPConfig(text_config=text, vision_config=_tiny_vision(), projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    images = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _blip_processor(folder: Path) -> object:
    from transformers import BertTokenizer, BlipImageProcessorPil, BlipProcessor

    vocab = folder / "vocab.txt"
    folder.mkdir(parents=True, exist_ok=True)
    vocab.write_text("\n".join([*SPECIALS, *WORDS]) + "\n")
    tokenizer = BertTokenizer(str(vocab), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    images = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return BlipProcessor(image_processor=images, tokenizer=tokenizer)


def build_tiny_blip(folder: Path, task: str = "caption", seed: int = 0) -> Path:
    """A random BLIP captioner (`task="caption"`) or question answerer (`"vqa"`) with its BlipProcessor."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipForQuestionAnswering

    processor = _blip_processor(folder)
    tok = processor.tokenizer  # type: ignore[attr-defined]
    text = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 64, "encoder_hidden_size": 32,
            "bos_token_id": tok.convert_tokens_to_ids("[DEC]"), "sep_token_id": tok.sep_token_id,
            "eos_token_id": tok.sep_token_id, "pad_token_id": tok.pad_token_id}
    config = BlipConfig(text_config=text, vision_config=_tiny_vision(), projection_dim=16)
    torch.manual_seed(seed)
    cls = BlipForQuestionAnswering if task == "vqa" else BlipForConditionalGeneration
    model = cls(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


def build_tiny_git(folder: Path, seed: int = 0) -> Path:
    """A random GIT captioner (`GitForCausalLM`, microsoft/git-base's architecture) with its GitProcessor."""
    import torch
    from transformers import CLIPImageProcessorPil, GitConfig, GitForCausalLM, GitProcessor

    tok = _blip_processor(folder).tokenizer  # type: ignore[attr-defined]
    config = GitConfig(vision_config=_tiny_vision(), vocab_size=len(tok), hidden_size=32,
                       intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=64,
                       bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                       pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = GitForCausalLM(config).eval()
    images = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    model.save_pretrained(folder)
    GitProcessor(image_processor=images, tokenizer=tok).save_pretrained(folder)
    return folder
