"""The one stub the vLLM judge needs on a machine without a GPU: the attention backend's selection
and its impl.

vLLM's CPU platform refuses an FP8 KV cache ("not supported by the CPU attention backend"), and
FlashAttention's impl needs a CUDA device to construct. Everything the judge checks happens before
or beside the impl: Attention.__init__'s kv_cache_dtype decision (skip layers, auto -> fp8), the
quantization method, create_weights, load_weights and process_weights_after_loading. So the stub
runs CudaPlatform's backend selection rule (Hopper's priority order, each backend's own
validate_configuration)
at a stated device capability and FlashAttention version (Hopper with FA3 by default: what `vllm
serve` picks on an H100/H200; CTCAL_JUDGE_FA_VERSION=2 asks what FA2 would say), and replaces only the
chosen backend's impl, with one that stores its arguments and refuses to run.

Stubbed: CpuPlatform.get_attn_backend_cls (by CudaPlatform's selection), CpuPlatform.get_device_capability (FlashAttention's FP8
checks ask the platform), fa_utils.get_flash_attn_version and is_flash_attn_varlen_func_available (flash_attn.py's import of
flash_attn_supports_sinks follows from it), the CPU MoE weight repacking (identity),
the impl class, and the CUDA kernel _C::static_scaled_fp8_quant (a stated torch stand-in, used when
FP8 W8A8 layers are requantized after loading). Nothing else.
"""
import os

import torch
import vllm.v1.attention.backends.fa_utils as fa_utils
import vllm.v1.attention.backends.flash_attn as flash_attn
from vllm.platforms.cpu import CpuPlatform
from vllm.platforms.interface import DeviceCapability
from vllm.v1.attention.backend import AttentionImpl

FA_VERSION = int(os.environ.get("CTCAL_JUDGE_FA_VERSION", "3"))
CAPABILITY = DeviceCapability(major=9, minor=0)


def _fa_version(*args, **kwargs):
    return FA_VERSION


fa_utils.get_flash_attn_version = _fa_version
flash_attn.get_flash_attn_version = _fa_version
# The CUDA wheel ships vllm_flash_attn's varlen kernel; FlashAttention's sink support asks for it.
fa_utils.is_flash_attn_varlen_func_available = lambda: True
flash_attn.is_flash_attn_varlen_func_available = lambda: True
# ...and flash_attn.py imports flash_attn_supports_sinks only where that kernel exists (it asks
# get_flash_attn_version, stubbed above).
flash_attn.flash_attn_supports_sinks = fa_utils.flash_attn_supports_sinks

# The CPU platform's MoE experts repack their weights for its own kernel after loading
# (_C::prepack_moe_weight, absent from the CUDA wheel). The layout is the CPU kernel's business, not
# the judge's (scales and names are settled before it): the stand-in keeps the weights as loaded.
import vllm.model_executor.layers.fused_moe.experts.cpu_moe as cpu_moe  # noqa: E402
cpu_moe.cpu_prepack_moe_weight = lambda weight, isa: weight

# FP8 W8A8 layers requantize fused weights (qkv, gate_up) to one scale after loading with vLLM's
# CUDA kernel _C::static_scaled_fp8_quant, absent on a CPU. Its operation, stated: out =
# fp8_e4m3(clamp(x / scale, -448, 448)) with one per-tensor scale.
if not hasattr(torch.ops._C, "static_scaled_fp8_quant"):
    torch.library.define("_C::static_scaled_fp8_quant",
                         "(Tensor(a!) result, Tensor input, Tensor scale, int[]? group_shape=None) -> ()")

    @torch.library.impl("_C::static_scaled_fp8_quant", "CPU")
    def _static_scaled_fp8_quant(result, x, scale, group_shape=None):
        if scale.numel() != 1:
            raise NotImplementedError("the judge's CPU stand-in covers per-tensor scales only")
        finfo = torch.finfo(torch.float8_e4m3fn)
        result.copy_((x.float() / scale.float()).clamp(finfo.min, finfo.max).to(result.dtype))


class RecordingImpl(AttentionImpl):
    """Stores what Attention passed; never runs a forward pass."""

    def __init__(self, num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window,
                 kv_cache_dtype, *args, **kwargs):
        self.num_heads, self.head_size, self.scale = num_heads, head_size, scale
        self.num_kv_heads, self.sliding_window, self.kv_cache_dtype = num_kv_heads, sliding_window, kv_cache_dtype

    def forward(self, *args, **kwargs):
        raise RuntimeError("the vLLM judge builds and loads models; it never runs them")

    def process_weights_after_loading(self, act_dtype: torch.dtype):
        pass


def _judge_backend(backend_class):
    """backend_class with the recording impl, importable by path (vLLM imports backends by name)."""
    name = "Judge" + backend_class.__name__
    if name not in globals():
        globals()[name] = type(name, (backend_class,), {"get_impl_cls": staticmethod(lambda: RecordingImpl)})
    return f"{__name__}.{name}"


# The order CudaPlatform tries non-MLA backends on Hopper (platforms/cuda.py, _get_backend_priorities;
# that module needs libcuda to import, so its list is restated here, the one thing restated).
def _hopper_priorities(use_mm_prefix):
    from vllm.v1.attention.backends.registry import AttentionBackendEnum as B
    return ([B.TRITON_FLASH_ATTN] if use_mm_prefix else []) + [B.FLASH_ATTN, B.FLASHINFER, B.TRITON_ATTN]


def _select(cls, selected_backend, attn_selector_config, num_heads=None):
    """CudaPlatform.get_valid_backends' rule: the first backend in priority order whose own
    validate_configuration accepts the layer at CAPABILITY; a backend whose Python package is absent
    here (FlashInfer) counts as invalid, as vLLM counts an ImportError."""
    reasons = {}
    for backend in _hopper_priorities(attn_selector_config.use_mm_prefix):
        try:
            backend_class = backend.get_class()
            invalid = backend_class.validate_configuration(device_capability=CAPABILITY,
                                                           **attn_selector_config._asdict())
        except (ImportError, OSError) as e:
            invalid = [f"{type(e).__name__}: {e}"]
        if not invalid:
            SELECTED.append(backend.name)
            return _judge_backend(backend_class)
        reasons[backend.name] = invalid
    # CudaPlatform.get_attn_backend_cls raises the same ValueError when no backend is valid.
    raise ValueError(f"No valid attention backend found for cuda (SM{CAPABILITY.major}{CAPABILITY.minor}, "
                     f"FA{FA_VERSION}). Reasons: {reasons}")


SELECTED = []  # the backend each Attention layer got, in construction order


CpuPlatform.get_attn_backend_cls = classmethod(_select)
CpuPlatform.get_device_capability = classmethod(lambda cls, device_id=0: CAPABILITY)
