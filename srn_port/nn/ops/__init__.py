"""TF-exact building blocks: 'SAME' convolutions and TF bilinear resize."""

from .conv import Conv2dSame, ConvTranspose2dSame, create_conv2d_same
from .padding import same_padding, pad_same
from .resize import tf_resize_bilinear, tf_resize_images

__all__ = [
    "Conv2dSame",
    "ConvTranspose2dSame",
    "create_conv2d_same",
    "same_padding",
    "pad_same",
    "tf_resize_bilinear",
    "tf_resize_images",
]
