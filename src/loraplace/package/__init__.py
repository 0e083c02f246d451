"""A study's reproducibility package (``loraplace package``) and its check (``verify``)."""

from loraplace.package.archive import PackageResult, make_package
from loraplace.package.verify import Finding, verify_package

__all__ = ["Finding", "PackageResult", "make_package", "verify_package"]
