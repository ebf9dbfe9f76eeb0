"""ComfyUI classes without a mapping, and why: named in the import's error for each such node."""

from __future__ import annotations

# Why a class has no mapping: 'core (...)' for ComfyUI's own classes nodegraph does not serve yet,
# else the ComfyUI package that usually provides a custom class (named in the error).
KNOWN_ELSEWHERE: dict[str, str] = {
    "EmptySD3LatentImage": "core (SD3: not supported by nodegraph yet)",
    "TripleCLIPLoader": "core (SD3: not supported by nodegraph yet)",
    "ControlNetApplySD3": "core (SD3: not supported by nodegraph yet)",
    "CheckpointLoader": "core (deprecated in ComfyUI: use CheckpointLoaderSimple)",
    "IPAdapterApply": "ComfyUI_IPAdapter_plus",
    "IPAdapterAdvanced": "ComfyUI_IPAdapter_plus",
    "UltimateSDUpscale": "ComfyUI_UltimateSDUpscale",
    "Efficient Loader": "efficiency-nodes-comfyui",
    "KSampler (Efficient)": "efficiency-nodes-comfyui",
    "OpenposePreprocessor": "comfyui_controlnet_aux",
    "CannyEdgePreprocessor": "comfyui_controlnet_aux",
    "DWPreprocessor": "comfyui_controlnet_aux",
    "CR Apply LoRA Stack": "ComfyUI_Comfyroll_CustomNodes",
    "FaceDetailer": "ComfyUI-Impact-Pack",
    "SAMLoader": "ComfyUI-Impact-Pack",
    "VHS_VideoCombine": "ComfyUI-VideoHelperSuite",
}
