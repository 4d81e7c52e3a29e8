"""Issue #10 in one command: bad inputs, compute-sanitizer, fuzzing, huge sizes, determinism, CUDA
graphs and torch.compile. Writes benchmarks/results/<device>-reliability.json (h100-reliability.json on
an H100, cpu-reliability.json without a GPU) with the counts, and exits non-zero on any failure.

    python3 scripts/reliability.py                  # everything this machine can run
    python3 scripts/reliability.py --fuzz-cases 50  # quicker fuzz (the defaults: 300 CPU, 2000 CUDA)

Run from the repository root after scripts/build.sh (flash_attn/_C is imported in place). Parts:
  bad_input    tests/python/test_validation_inputs.py, test_errors.py, test_validation_empty.py (empty
               inputs give defined results), test_validation_debug.py, and the C++ validation tests
               (flash_cpp_tests --gtest_filter=*Validation*) when the build directory has them
  sanitizer    (GPU) compute-sanitizer memcheck over every group of scripts/sanitizer_cases.py (with
               PYTORCH_NO_CUDA_MEMORY_CACHING=1), racecheck and synccheck over "standard"
  fuzz         tests/python/test_fuzz.py's cases, in this process, per device (seeded, time-bounded)
  huge         (GPU) tests/python/test_huge.py with FLASH_ATTN_HUGE=1
  determinism  tests/python/test_determinism.py
  cuda_graphs  (GPU) tests/python/test_cuda_graphs.py
  compile      tests/python/test_compile.py
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import torch  # noqa: E402

PY = sys.executable


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _log(msg):
    print(f"[reliability {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- pytest with a junit report ------------------------------------------------------------------------


def run_pytest(files, extra_env=None, timeout=900, args=()):
    """Counts of one pytest run: tried (not skipped), passed, failed, skipped, xfailed, failures (names)."""
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = os.path.join(tmp, "junit.xml")
        cmd = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", f"--junitxml={xml_path}",
               *args, *files]
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=_env(**(extra_env or {})), capture_output=True, text=True,
                                  timeout=timeout)
            tail = (proc.stdout + proc.stderr)[-3000:]
            rc = proc.returncode
        except subprocess.TimeoutExpired as e:
            tail, rc = f"timeout after {timeout} s: {str(e.stdout)[-2000:]}", -1
        counts = {"tried": 0, "passed": 0, "failed": 0, "skipped": 0, "xfailed": 0, "failures": [],
                  "seconds": round(time.monotonic() - start, 1), "rc": rc}
        if not os.path.exists(xml_path):
            counts["failed"] = 1
            counts["failures"].append(f"pytest produced no report: {tail}")
            return counts
        for case in ET.parse(xml_path).getroot().iter("testcase"):
            name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
            skipped = case.find("skipped")
            if skipped is not None:
                kind = "xfailed" if "xfail" in (skipped.get("type", "") + skipped.get("message", "")) else "skipped"
                counts[kind] += 1
                continue
            counts["tried"] += 1
            if case.find("failure") is not None or case.find("error") is not None:
                counts["failed"] += 1
                node = case.find("failure") if case.find("failure") is not None else case.find("error")
                counts["failures"].append(f"{name}: {(node.get('message') or '')[:300]}")
            else:
                counts["passed"] += 1
        if rc not in (0, 5) and counts["failed"] == 0:  # 5: nothing collected
            counts["failed"] = 1
            counts["failures"].append(f"pytest exited with {rc}: {tail}")
        counts["failures"] = counts["failures"][:30]
        return counts


# ---- the parts -------------------------------------------------------------------------------------------


def part_bad_input(build_dir):
    result = {"python": run_pytest(["tests/python/test_validation_inputs.py", "tests/python/test_errors.py",
                                    "tests/python/test_validation_empty.py", "tests/python/test_validation_debug.py"])}
    exe = os.path.join(ROOT, build_dir, "flash_cpp_tests")
    if os.path.exists(exe):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "gtest.json")
            proc = subprocess.run([exe, "--gtest_filter=*Validation*", f"--gtest_output=json:{out}"],
                                  capture_output=True, text=True, timeout=300)
            tried = failed = 0
            failures = []
            if os.path.exists(out):
                for suite in json.load(open(out)).get("testsuites", []):
                    for t in suite.get("testsuite", []):
                        tried += 1
                        if t.get("failures"):
                            failed += 1
                            failures.append(f"{suite['name']}.{t['name']}")
            else:
                failed, failures = 1, [proc.stdout[-2000:]]
            result["cpp"] = {"tried": tried, "passed": tried - failed, "failed": failed, "failures": failures}
    else:
        result["cpp"] = {"skipped": f"{exe} not built"}
    py, cpp = result["python"], result["cpp"]
    result["tried"] = py["tried"] + cpp.get("tried", 0)
    result["passed"] = py["passed"] + cpp.get("passed", 0)
    result["failed"] = py["failed"] + cpp.get("failed", 0)
    return result


# The groups expected to be clean share one process; adversarial_cu_seqlens gets its own (a detected
# fault can leave the CUDA context unusable for what follows).
SANITIZER_RUNS = [("memcheck", "standard,wide_head_dims,adversarial_pages,adversarial_kvcache"), ("memcheck", "adversarial_cu_seqlens"),
                  ("racecheck", "standard"), ("synccheck", "standard")]


_REPORT_START = re.compile(r"^=+ (Invalid|Race|Barrier|Error|Uninitialized|Program hit|Out-of-range|Misaligned)")


def first_reports(text, limit=10):
    """Distinct compute-sanitizer reports: (what, kernel) -> count, the kernel cut to 240 characters."""
    counts, what = {}, None
    for ln in text.splitlines():
        if _REPORT_START.match(ln):
            what = ln.strip("= ").strip()
            continue
        if what is not None and ln.startswith("=========") and ln.strip("= ").startswith("at "):
            kernel = re.sub(r"\+0x[0-9a-f]+$", "", ln.strip("= ").strip()[3:])[:240]
            counts[(what, kernel)] = counts.get((what, kernel), 0) + 1
            what = None
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return [f"{n} x {w} at {k}" for (w, k), n in ranked]


def python_error(text):
    """The Python traceback's last lines (the nanobind leak report printed at exit comes after them)."""
    lines = [ln for ln in text.splitlines() if not ln.startswith(("nanobind:", " - leaked", "See https://nanobind"))]
    return lines[-12:]


def part_sanitizer(timeout, tools=None):
    tool_exe = "compute-sanitizer"
    if subprocess.run(["which", tool_exe], capture_output=True).returncode != 0:
        cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
        tool_exe = os.path.join(cuda_home, "bin", "compute-sanitizer")
        if not os.path.exists(tool_exe):
            return {"skipped": "compute-sanitizer not found", "errors": None}
    runs, total = [], 0
    for tool, group in SANITIZER_RUNS:
        if tools and tool not in tools:
            continue
        cmd = [tool_exe, "--tool", tool, "--print-limit", "1000", PY, "scripts/sanitizer_cases.py", "--groups", group]
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=_env(PYTORCH_NO_CUDA_MEMORY_CACHING=1), capture_output=True,
                                  text=True, timeout=timeout)
            text, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            text, rc = f"timeout after {timeout} s\n{e.stdout or ''}", -1
        # memcheck/synccheck end with "ERROR SUMMARY: n errors"; racecheck with
        # "RACECHECK SUMMARY: h hazards displayed (n errors, w warnings)".
        m = re.search(r"ERROR SUMMARY:\s*(\d+)", text) or re.search(r"RACECHECK SUMMARY:[^(]*\((\d+) error", text)
        errors = int(m.group(1)) if m else None
        finished = "sanitizer cases done" in text
        run = {"tool": tool, "group": group, "errors": errors, "finished": finished, "rc": rc,
               "seconds": round(time.monotonic() - start, 1)}
        if errors or not finished:
            run["first_reports"] = first_reports(text)
            exc = [ln for ln in text.splitlines() if "SANITIZER_CASES_EXCEPTION" in ln]
            if exc or not finished:
                run["exception"] = exc[:3] or python_error(text)
        _log(f"sanitizer {tool} {group}: {errors} errors, finished={finished}, {run['seconds']} s")
        runs.append(run)
        total += errors if errors is not None else 1
    return {"errors": total, "runs": runs}


def part_fuzz(devices, cases, seconds):
    import test_fuzz as F

    result = {}
    for device in devices:
        n = cases if cases is not None else {"cpu": 300, "cuda": 2000}[device]
        budget = seconds if seconds is not None else F.seconds_for(device)
        for key in F.STATS:
            F.STATS[key] = 0
        start = time.monotonic()
        ran, failures = F.run_fuzz(device, 0, n, start + budget)
        result[device] = {"cases": ran, "requested": n, "failures": len(failures),
                          "seed": int(os.environ.get("FLASH_ATTN_FUZZ_SEED", "") or 0),
                          "seconds": round(time.monotonic() - start, 1), "grad_checks": F.STATS["grad_checks"],
                          "d_allowance_used": F.STATS["d_allowance_used"],
                          "failed_cases": [{"case": f["case"], "config": f["config"], "failure": f["failure"][:400]}
                                           for f in failures[:20]]}
        _log(f"fuzz {device}: {ran} cases, {len(failures)} failures in {result[device]['seconds']} s")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the huge cases (another process) need the memory
    return result


# ---- driver ----------------------------------------------------------------------------------------------


def device_slug(name):
    for key in ("H100", "H200", "A100", "L40S", "RTX 4090"):
        if key in name:
            return key.lower().replace(" ", "")
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def commit():
    if os.environ.get("FLASH_ATTN_COMMIT"):
        return os.environ["FLASH_ATTN_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="JSON path (default benchmarks/results/<device>-reliability.json)")
    ap.add_argument("--fuzz-cases", type=int, help="fuzz cases per device (default 300 CPU, 2000 CUDA)")
    ap.add_argument("--fuzz-seconds", type=float, help="fuzz budget per device (default 200 CPU, 300 CUDA)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip")
    ap.add_argument("--only", default="", help="comma-separated parts to run (default: all)")
    ap.add_argument("--sanitizer-timeout", type=int, default=120, help="seconds per compute-sanitizer run")
    ap.add_argument("--sanitizer-tools", default="", help="comma-separated subset of memcheck,racecheck,synccheck")
    ap.add_argument("--build-dir", default=os.environ.get("FLASH_ATTN_BUILD_DIR", "build/dev"))
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    gpu = torch.cuda.is_available()
    devices = ["cpu", "cuda"] if gpu else ["cpu"]
    name = torch.cuda.get_device_name(0) if gpu else f"cpu ({platform.processor() or platform.machine()})"
    report = {"device": name, "commit": commit(), "date": datetime.date.today().isoformat(),
              "software": {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()},
              "command": " ".join(["python3", "scripts/reliability.py", *sys.argv[1:]])}
    t0 = time.monotonic()
    parts = [
        ("bad_input", lambda: part_bad_input(args.build_dir)),
        ("sanitizer", lambda: part_sanitizer(args.sanitizer_timeout, set(filter(None, args.sanitizer_tools.split(","))))
         if gpu else {"skipped": "no GPU", "errors": None}),
        ("fuzz", lambda: part_fuzz(devices, args.fuzz_cases, args.fuzz_seconds)),
        ("huge", lambda: run_pytest(["tests/python/test_huge.py"], {"FLASH_ATTN_HUGE": 1}) if gpu
         else {"skipped": "no GPU"}),
        ("determinism", lambda: run_pytest(["tests/python/test_determinism.py"])),
        ("cuda_graphs", lambda: run_pytest(["tests/python/test_cuda_graphs.py"]) if gpu else {"skipped": "no GPU"}),
        ("compile", lambda: run_pytest(["tests/python/test_compile.py"])),
    ]
    ok = True
    for key, fn in parts:
        if key in skip or (args.only and key not in args.only.split(",")):
            report[key] = {"skipped": "--skip/--only"}
            continue
        _log(f"{key} ...")
        report[key] = fn()
        r = report[key]
        if key == "fuzz":
            bad = any(v["failures"] for v in r.values())
        elif key == "sanitizer":
            bad = bool(r.get("errors"))
        else:
            bad = bool(r.get("failed"))
        ok = ok and not bad
        _log(f"{key}: {'FAILED' if bad else 'ok'} {json.dumps({k: v for k, v in r.items() if k not in ('failures', 'runs', 'python', 'cpp')} if key != 'fuzz' else {d: {k: v[k] for k in ('cases', 'failures')} for d, v in r.items()})}")
    report["seconds"] = round(time.monotonic() - t0, 1)
    report["ok"] = ok
    out = args.out or os.path.join(ROOT, "benchmarks", "results",
                                   f"{device_slug(name) if gpu else 'cpu'}-reliability.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1, default=str)
    _log(f"wrote {out} ({'all ok' if ok else 'FAILURES'}) in {report['seconds']} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
