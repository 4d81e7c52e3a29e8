"""Result files in the format of /work/shared/BENCH.md: metadata, FLOP/byte formulas, JSON writing.

Every performance number of the project goes through `ResultFile`, so the header fields (device,
commit, date, software, ceilings) are filled the same way by the demo and by the suite.
"""
import datetime
import json
import os
import platform
import re
import subprocess
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")

DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
DTYPES_BY_NAME = {name: dt for dt, name in DTYPE_NAMES.items()}


def log(*args):
    """Progress goes to stderr so stdout stays a clean table."""
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Formulas (BENCH.md). Kept here, in one place, so demo and suite can never disagree.
# ---------------------------------------------------------------------------------------------
def attention_fwd_flops(batch, seqlen_q, seqlen_k, nheads, hdim, causal):
    """4*b*sq*sk*h*d; halved for causal only when sq == sk (BENCH.md's convention)."""
    flops = 4.0 * batch * seqlen_q * seqlen_k * nheads * hdim
    if causal and seqlen_q == seqlen_k:
        flops /= 2
    return flops


OP_FLOP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}


def op_flops(op, batch, seqlen_q, seqlen_k, nheads, hdim, causal):
    return OP_FLOP_FACTOR[op] * attention_fwd_flops(batch, seqlen_q, seqlen_k, nheads, hdim, causal)


def decode_bytes(batch, seqlen_q, context, nheads, nheads_kv, hdim, elem_size):
    """Bytes a decode step must move: K and V of the whole context, plus q read and out written."""
    kv = 2 * batch * context * nheads_kv * hdim * elem_size
    q_out = 2 * batch * seqlen_q * nheads * hdim * elem_size
    return kv + q_out


# ---------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------
def git_commit():
    # The GPU machine gets a copy of the tree without .git: the round passes the sha in.
    if os.environ.get("FLASH_ATTN_COMMIT"):
        return os.environ["FLASH_ATTN_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10)
        sha = out.stdout.strip()
        return sha if out.returncode == 0 and sha else "unknown"
    except Exception:
        return "unknown"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {cpu_name()} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def device_slug(device):
    """Short file-name prefix: 'h100', 'h200', 'a100', ... for GPUs, 'cpu' for the CPU."""
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    match = re.search(r"\b([a-z]{1,2}\d{2,4}[a-z]?)\b", name.replace("nvidia", ""))
    if match:
        return match.group(1)
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "gpu"


def software_versions():
    cudnn = None
    try:
        if torch.backends.cudnn.is_available():
            cudnn = torch.backends.cudnn.version()
    except Exception:
        cudnn = None
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn,
            "python": platform.python_version()}
    try:
        import triton  # noqa: F401  (only its version is recorded)
        info["triton"] = triton.__version__
    except Exception:
        pass
    return info


class ResultFile:
    """Collects rows and writes the BENCH.md JSON; `save()` may be called after every config so a
    run killed by a time limit still leaves everything measured so far on disk."""

    def __init__(self, path, device, extra=None):
        self.path = path
        self.data = {
            "device": device_name(device),
            "commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "software": software_versions(),
            "ceilings": {},
            "rows": [],
        }
        if extra:
            self.data.update(extra)

    @property
    def rows(self):
        return self.data["rows"]

    def set_ceilings(self, ceilings):
        self.data["ceilings"] = ceilings

    def add(self, row):
        self.rows.append(row)

    def save(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
            f.write("\n")
        os.replace(tmp, self.path)  # atomic: a reader never sees half a file


def default_out_path(device, what):
    return os.path.join(RESULTS_DIR, f"{device_slug(device)}-{what}.json")


def round_sig(x, digits=4):
    """Round to a few significant digits so files stay readable; None passes through."""
    if x is None:
        return None
    if x == 0:
        return 0.0
    from math import floor, log10
    return round(x, max(0, digits - 1 - int(floor(log10(abs(x))))))
