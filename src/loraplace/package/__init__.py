"""A study's reproducibility package (``loraplace package``) and its check (``verify``)."""

from loraplace.package.archive import PackageResult, make_package
from loraplace.package.finding import Finding
from loraplace.package.verify import verify_package

__all__ = ["Finding", "PackageResult", "make_package", "verify_package"]
