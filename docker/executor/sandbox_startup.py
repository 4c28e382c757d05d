"""Start-up glue for every Python run in the sandbox (imported by sandbox_startup.pth; Debian
already ships a sitecustomize.py, so a .pth line is the hook that is always honoured).

Kept tiny: it runs before every program, so it must cost well under a millisecond.
1. Matplotlib's font list is built once into the image; each run starts with an empty /tmp,
   so copy it into MPLCONFIGDIR instead of letting matplotlib rebuild it (about a second).
2. There is no display: `plt.show()` saves the figures as plot_<n>.png in the working dir,
   which is what the client's prompt promises the model.
"""
import os
import sys

_CACHE = "/opt/sandbox/mpl-cache"


def _seed_matplotlib_cache():
    target = os.environ.get("MPLCONFIGDIR")
    if not target or os.path.isdir(target) or not os.path.isdir(_CACHE):
        return
    try:
        os.makedirs(target, mode=0o700)
        for name in os.listdir(_CACHE):
            with open(os.path.join(_CACHE, name), "rb") as src, open(os.path.join(target, name), "wb") as dst:
                dst.write(src.read())
    except OSError:
        pass  # a read-only or full /tmp only costs the rebuild


def _patch_show(pyplot):
    counter = [0]

    def show(*args, **kwargs):
        for num in pyplot.get_fignums():
            counter[0] += 1
            dpi = pyplot.rcParams["savefig.dpi"]
            if dpi == "figure":
                dpi = pyplot.rcParams["figure.dpi"]
            pyplot.figure(num).savefig(f"plot_{counter[0]}.png", dpi=min(float(dpi), 200.0))
        pyplot.close("all")

    pyplot.show = show


class _PyplotHook:
    """Meta-path finder that patches matplotlib.pyplot right after it is first imported."""

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib.pyplot":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            _patch_show(module)

        loader.exec_module = exec_module
        return spec


_seed_matplotlib_cache()
sys.meta_path.insert(0, _PyplotHook())
