"""A --plugin for the BF16 tests: this machine's CPU reported as having BF16 arithmetic (``has_bf16``), in the
coordinator and in every worker process that imports it. Only the capability is mocked: no CPU here has
avx512_bf16 / amx_bf16, and a test must still reach the code a BF16 CPU runs. Everything else stays real:
OpenVINO compiles with INFERENCE_PRECISION_HINT=bf16 and reads back what it really does (f32 on this CPU),
torch runs under bfloat16 autocast (emulated on a CPU without BF16)."""
from hvit_deploy.utils import cpu

cpu.has_bf16 = lambda: True
