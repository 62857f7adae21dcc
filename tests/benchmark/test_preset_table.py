"""The preset table: every built-in preset is named with its module, and nothing loads early."""

from __future__ import annotations

import importlib
import subprocess
import sys

from unseen.benchmark.presets import registry


def test_every_preset_module_registers_exactly_the_names_the_table_gives_it() -> None:
    for module in sorted(set(registry.MODULES.values())):
        before = set(registry._PRESETS)
        importlib.import_module(f"unseen.benchmark.presets.{module}")
        listed = {n for n, m in registry.MODULES.items() if m == module}
        registered = {n for n, f in registry._PRESETS.items()
                      if f.__module__ == f"unseen.benchmark.presets.{module}"}
        assert registered == listed, (module, registered, listed, before)


def test_listing_presets_imports_no_preset_module_and_no_torch() -> None:
    code = (
        "import sys\n"
        "from unseen.benchmark import preset_names\n"
        "names = preset_names()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('unseen.benchmark.presets.')\n"
        "                and m != 'unseen.benchmark.presets.registry')\n"
        "print(len(names), loaded, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(len(registry.MODULES)), "[]", "False"], out.stdout + out.stderr
