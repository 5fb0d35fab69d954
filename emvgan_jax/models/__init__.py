"""Models: the EmoMV benchmark baselines and EMVGAN's generator side and discriminator."""

from emvgan_jax.models.baseline import EmoMVBaseline
from emvgan_jax.models.cbp import CompactBilinearPooling, compact_bilinear_pooling, count_sketch
from emvgan_jax.models.discriminator import ModalityDiscriminator
from emvgan_jax.models.emvgan import GeneratorSide
from emvgan_jax.models.encoders import Encoder
from emvgan_jax.models.generators import Generator
from emvgan_jax.models.layers import ProjectionHead, TorchDense, count_params, gelu

__all__ = [
  "CompactBilinearPooling",
  "EmoMVBaseline",
  "Encoder",
  "Generator",
  "GeneratorSide",
  "ModalityDiscriminator",
  "ProjectionHead",
  "TorchDense",
  "compact_bilinear_pooling",
  "count_params",
  "count_sketch",
  "gelu",
]
