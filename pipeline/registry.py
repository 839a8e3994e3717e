"""The source systems the pipeline knows, listed once.

Each name is a module in `pipeline/sources/` that declares the source's streams and settings
(`SOURCE`), and a module in `pipeline/sandbox/` that declares its simulator and how to point the
engine at a running one (`SANDBOX`). `pipeline.sources.SOURCES` and
`pipeline.sandbox.SANDBOXES` are read from these modules; the demo, `pipeline sandbox`, the
tests' settings and the benchmark's simulators go over those two and name no source.

The order is the one `pipeline demo` and `pipeline sandbox` show the sources in (the order they
were added). Adding a source adds its name here, last.
"""

from __future__ import annotations

SOURCE_NAMES: tuple[str, ...] = ("soho", "valomnia", "afosto", "sparkfly", "digilocker")
