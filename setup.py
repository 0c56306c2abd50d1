"""Build hook (the project's metadata is in pyproject.toml): the repository's top-level folders
install as subpackages of the one `vacelive` package, so nothing but `vacelive` lands at the top
of site-packages and a checkout (editable install) imports exactly what a wheel does."""
from setuptools import find_packages, setup

# repository folder -> installed package
FOLDERS = {"engine": "vacelive.engine", "bridge": "vacelive.bridge",
           "presets": "vacelive.presets", "touchdesigner": "vacelive.touchdesigner"}

package_dir = {"vacelive": "vacelive"}
packages = ["vacelive"]
for folder, name in FOLDERS.items():
    package_dir[name] = folder
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(package_dir=package_dir, packages=packages)
