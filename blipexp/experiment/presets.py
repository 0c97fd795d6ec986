"""The named values a spec's fields accept besides Hub ids and folders: the defaults on the Hub, the offline tiny
model and the embedded pitch dataset, LoRA's target-layer presets."""

HUB_MODEL = "Salesforce/blip-image-captioning-base"
HUB_DATASET = "ybelkada/football-dataset"
TINY_MODEL = "tiny"  # the offline preset: BLIP architecture from a small BlipConfig, pretrained on generated scenes
TINY_RANDOM_MODEL = "tiny-random"  # the same architecture from random weights (comparisons with the pretrained start)
PITCH_DATASET = "pitch"  # the embedded, generated football scenes
# lora_targets presets: names of BlipForConditionalGeneration's Linear layers (the tiny preset and BLIP-base alike)
_DECODER_ATTENTION = (r"text_decoder\.bert\.encoder\.layer\.\d+\.(attention|crossattention)\."
                      r"(self\.(query|key|value)|output\.dense)")
_VISION_ATTENTION = r"vision_model\.encoder\.layers\.\d+\.self_attn\.(qkv|projection)"
LORA_PRESETS = {
    "decoder": "text decoder attention (self and cross: query, key, value, output)",
    "decoder+vision": "text decoder attention and vision encoder attention (qkv, projection)",
}
LORA_PATTERNS = {"decoder": _DECODER_ATTENTION, "decoder+vision": f"{_DECODER_ATTENTION}|{_VISION_ATTENTION}"}
