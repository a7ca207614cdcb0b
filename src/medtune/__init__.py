"""medtune: fine-tune an open LLM into a medical question-answering assistant, evaluate it, report it."""

import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"


def _quiet_library_notices() -> None:
    """Drop two library notices that read as failures to a newcomer and that medtune cannot act on.

    - peft imports bitsandbytes whenever it is installed (peft/helpers.py, at `import peft`), and bitsandbytes
      then logs "Failed to load CPU gemm_4bit_forward from kernels-community" on CPUs with AVX512-BF16 when the
      optional `kernels` package is missing: it concerns only 4-bit matmuls on CPU, where bitsandbytes falls
      back to its own kernel. Dropped by a filter on that one logger and message.
    - peft (PeftModel.__init__) and TRL read `model.is_gradient_checkpointing`, which transformers 5 deprecates
      with a FutureWarning on every call: their code, not the user's.
    """
    _logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        lambda record: not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community"))
    _warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


_quiet_library_notices()
