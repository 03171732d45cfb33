"""Framework probe, run by the ``frameworks`` check in the runtime's own Python.

Standalone on purpose (the runtime's interpreter may not have gpu_runner installed, and
may be an older Python): standard library only, no annotations that need 3.10.

    python _framework_probe.py --discover      which of torch, tensorflow, jax are installed
    python _framework_probe.py torch           import it, list the GPUs it sees, run a tiny
                                               matmul on each device (on the CPU when none)

The answer is one line ``GPU_RUNNER_PROBE {json}`` on stdout; everything else the
framework prints is kept by the caller as the artifact.
"""

import json
import sys
import time
import traceback

MARK = "GPU_RUNNER_PROBE "
FRAMEWORKS = {"torch": ("torch",), "tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-gpu"),
              "jax": ("jax",)}
N = 64  # a 64x64 matmul of ones: every element is N, the sum N**3


def _answer(data):
    sys.stdout.flush()
    sys.stdout.write(MARK + json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


def _dist_version(names):
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8
        return None
    for name in names:
        try:
            return metadata.version(name)
        except Exception:  # noqa: BLE001
            continue
    return None


def discover():
    import importlib.util

    found = {}
    for module, dists in FRAMEWORKS.items():
        try:
            spec = importlib.util.find_spec(module)
        except Exception:  # noqa: BLE001 - a broken package is found; importing it will tell
            spec = True
        if spec is not None:
            found[module] = {"version": _dist_version(dists),
                             "origin": getattr(spec, "origin", None) if spec is not True else None}
    return {"python": sys.executable, "python_version": sys.version.split()[0], "installed": found}


def _device_result(name, fn):
    t0 = time.time()
    try:
        value = fn()
        ok = abs(float(value) - N ** 3) < 1e-3 * N ** 3
        return {"device": name, "ok": ok, "value": float(value), "seconds": round(time.time() - t0, 3),
                "error": None if ok else "matmul of ones gave %r, expected %r" % (value, N ** 3)}
    except Exception as e:  # noqa: BLE001
        return {"device": name, "ok": False, "seconds": round(time.time() - t0, 3),
                "error": "%s: %s" % (type(e).__name__, e)}


def probe_torch():
    import torch

    out = {"version": torch.__version__, "cuda_build": getattr(torch.version, "cuda", None),
           "hip_build": getattr(torch.version, "hip", None)}
    try:
        out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001
        out["cudnn"] = None
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    out["gpus"] = []
    out["ops"] = []
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        out["gpus"].append({"index": i, "name": props.name, "capability": "%d.%d" % (props.major, props.minor),
                            "memory_total_mib": int(props.total_memory // 2 ** 20)})
        dev = "cuda:%d" % i

        def op(dev=dev):
            x = torch.ones(N, N, device=dev)
            y = (x @ x).sum().item()
            torch.cuda.synchronize(dev)
            return y
        out["ops"].append(_device_result(dev, op))
    if not count:
        out["why_no_gpu"] = ("PyTorch was built without CUDA" if not out["cuda_build"] and not out["hip_build"]
                             else "torch.cuda.is_available() is False")
        out["ops"].append(_device_result("cpu", lambda: (torch.ones(N, N) @ torch.ones(N, N)).sum().item()))
    return out


def probe_tensorflow():
    import tensorflow as tf

    out = {"version": tf.__version__}
    try:
        info = tf.sysconfig.get_build_info()
        out["cuda_build"] = info.get("cuda_version")
        out["cudnn"] = info.get("cudnn_version")
    except Exception:  # noqa: BLE001
        out["cuda_build"] = None
    gpus = tf.config.list_physical_devices("GPU")
    out["gpus"] = [{"index": i, "name": d.name} for i, d in enumerate(gpus)]
    out["ops"] = []
    for i, d in enumerate(gpus):
        try:
            details = tf.config.experimental.get_device_details(d)
            out["gpus"][i]["name"] = details.get("device_name") or d.name
            cc = details.get("compute_capability")
            if cc:
                out["gpus"][i]["capability"] = "%d.%d" % tuple(cc)
        except Exception:  # noqa: BLE001
            pass

        def op(i=i):
            with tf.device("/GPU:%d" % i):
                x = tf.ones((N, N))
                return float(tf.reduce_sum(tf.matmul(x, x)).numpy())
        out["ops"].append(_device_result("/GPU:%d" % i, op))
    if not gpus:
        out["why_no_gpu"] = ("TensorFlow was built without CUDA" if not out.get("cuda_build")
                             else "tf.config.list_physical_devices('GPU') is empty")

        def cpu():
            with tf.device("/CPU:0"):
                x = tf.ones((N, N))
                return float(tf.reduce_sum(tf.matmul(x, x)).numpy())
        out["ops"].append(_device_result("/CPU:0", cpu))
    return out


def probe_jax():
    import jax
    import jax.numpy as jnp

    out = {"version": jax.__version__}
    try:
        import jaxlib

        out["jaxlib"] = getattr(jaxlib, "__version__", None)
    except Exception:  # noqa: BLE001
        pass
    out["backend"] = jax.default_backend()
    try:
        gpus = jax.devices("gpu")
    except Exception as e:  # noqa: BLE001 - "Unknown backend gpu" on CPU-only jaxlib
        gpus = []
        out["why_no_gpu"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    out["gpus"] = [{"index": i, "name": getattr(d, "device_kind", str(d))} for i, d in enumerate(gpus)]
    out["ops"] = []
    devices = gpus or jax.devices("cpu")[:1]
    for d in devices:
        def op(d=d):
            x = jax.device_put(jnp.ones((N, N)), d)
            return float((x @ x).sum().block_until_ready())
        out["ops"].append(_device_result(str(d), op))
    if not gpus and "why_no_gpu" not in out:
        out["why_no_gpu"] = "jax.devices('gpu') is empty"
    return out


def main(argv):
    if argv[:1] == ["--discover"]:
        _answer(discover())
        return 0
    name = argv[0]
    fn = {"torch": probe_torch, "tensorflow": probe_tensorflow, "jax": probe_jax}[name]
    t0 = time.time()
    try:
        data = fn()
        data["import_ok"] = True
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        data = {"import_ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    data["seconds"] = round(time.time() - t0, 3)
    _answer(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
