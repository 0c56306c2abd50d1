"""Build hook (the project's metadata is in pyproject.toml): the shipped presets, kept in the
repository's presets/ folder, go into the wheel as the package data bridge/shipped_presets/*.json,
so an installed vacelive finds them without a checkout (bridge.presets.shipped_dir)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PRESETS = Path(__file__).resolve().parent / "presets"


class build_py_with_presets(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's presets/ in place
            return
        dest = Path(self.build_lib, "bridge", "shipped_presets")
        dest.mkdir(parents=True, exist_ok=True)
        for src in sorted(PRESETS.glob("*.json")):
            shutil.copyfile(src, dest / src.name)


setup(cmdclass={"build_py": build_py_with_presets})
