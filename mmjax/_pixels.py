"""CLIP's pixel statistics, shared by the host pipeline (mmjax.data) and the image towers
(mmjax.models), which normalise uint8 batches on the device."""
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""Per-channel RGB mean of CLIP's training images, in [0, 1] units."""
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""Per-channel RGB standard deviation of CLIP's training images, in [0, 1] units."""
