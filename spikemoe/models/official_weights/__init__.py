"""Official checkpoints in: map the state dicts of the official Spikformer, Spike-driven
Transformer and SpikingJelly 2.0 Spikformer onto ``SpikingVisionTransformer``.

Key maps follow these files (read, not copied; commits as mirrored):

``spikformer``   ZK-Zhou/spikformer @ 621268981827af47aa666c1b5f774de4281d90ad, three variants
                 told apart by their keys and shapes:
                 ``imagenet/model.py``   q/k/v/proj ``Conv1d(k=1)`` (q/k/v without bias), MLP
                                         ``Conv2d(k=1)``; SPS pools after all 4 LIFs; s = 0.125
                 ``cifar10/model.py``    q/k/v/proj/MLP ``Linear`` (all with bias); SPS pools
                                         after stages 3-4 only; s = 0.125
                 ``cifar10dvs/model.py`` as imagenet but MLP ``Conv1d(k=1)``; s = 0.25; an
                                         unused ``pos_embed`` and final ``norm``
                 Every variant's ``Block`` holds ``norm1``/``norm2`` LayerNorms its forward
                 never calls.
``spike_driven`` BICLab/Spike-Driven-Transformer @ 3faa82272eb499e4d56ea77707d4536e7c69a54b:
                 ``model/spikeformer.py`` (``head_lif``, ``head``), ``module/sps.py``
                 (``MS_SPS``: pools after the LIF in stages 1-3, before it in stage 4),
                 ``module/ms_conv.py`` (``MS_SSA_Conv``: q/k/v ``Conv2d(k=1)`` without bias;
                 ``talking_heads`` Conv1d defined, never called; ``MS_MLP_Conv``).
``spikingjelly`` SpikingJelly 2.0.0 ``activation_based/model/spikformer.py`` (``Spikformer``,
                 ``SpikformerPatchStem``: ``MaxPool2d`` inside ``conv_bn``, so BEFORE each LIF)
                 and ``activation_based/layer/attention.py`` (``SpikingSelfAttention``: one fused
                 ``qkv_conv_bn`` Conv1d without bias, output channels q, k, v).

Ours (``spikemoe.create_model("spikformer_8_384").state_dict()``):

    stem.stages.{i}.{0: Conv2d, 1: BatchNorm2d}   i = 0..3        stem.rpe.{0, 1}
    blocks.{l}.attn.qkv.{linear, bn}      Q, K, V fused: weights and BN statistics
                                          concatenated in q, k, v order
    blocks.{l}.attn.proj.{linear, bn}     blocks.{l}.mlp.fc1/fc2.{linear, bn}      head

A ``Conv1d``/``Conv2d`` with kernel 1 is a ``Linear``: its weight ``[out, in, 1(, 1)]`` is
reshaped to ``[out, in]``. A source layer without bias gets a zero bias (listed in
``ConversionReport.zero_filled``). A missing ``num_batches_tracked`` is filled with 0 (it
only matters when training with ``momentum=None``).

What the weights cannot tell (attention heads, T, the official DVS ``Erode`` pooling) goes
into ``ConversionReport.notes``; architecture differences that change the output
(pooling order, SSA scale, depth, ...) go into ``differences`` and refuse the conversion
unless ``allow_mismatch=True`` (then the weights are an initialisation, not the same
network). A shape mismatch always raises, naming both keys and both shapes.

Written by hand: no library maps these checkpoints.
"""
from .checkpoint_file import load_official_checkpoint
from .convert import convert_state_dict
from .report import ConversionError, ConversionReport, KeyMapping, ShapeMismatchError
from .variants import SOURCES, detect_source, infer_hyperparameters

__all__ = ["SOURCES", "ConversionError", "ConversionReport", "KeyMapping",
           "ShapeMismatchError", "convert_state_dict", "detect_source", "infer_hyperparameters",
           "load_official_checkpoint"]
