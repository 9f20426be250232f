"""Write ../offline.html: DVC's plot page with Vega, Vega-Lite and Vega-Embed inlined, so that
`dvc plots show` / `dvc plots diff` pages render without a network (DVC's own page loads them from a CDN).

Usage, with the three npm tarballs (`npm pack vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0`):

    python .dvc/plots/vendor/build_offline_html.py vega-5.33.1.tgz vega-lite-5.23.0.tgz vega-embed-6.29.0.tgz

Each bundle's sha256 is printed; record them in vendor/README.md (tests/test_plots.py checks them).
"""

from __future__ import annotations

import hashlib
import sys
import tarfile
from pathlib import Path

BUNDLES = {"vega": "package/build/vega.min.js", "vega-lite": "package/build/vega-lite.min.js",
           "vega-embed": "package/build/vega-embed.min.js"}
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>dnnprobe: DVC plots</title>
<!-- Vega, Vega-Lite and Vega-Embed from the npm registry, inlined so the page renders offline.
     BSD-3-Clause licences: .dvc/plots/vendor/LICENSE-*; versions and sha256: .dvc/plots/vendor/README.md -->
{scripts}
<style>
body {{ font-family: sans-serif; }}
table {{ border-spacing: 15px; }}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def main(tarballs: list[str]) -> None:
    scripts = []
    for name, member in BUNDLES.items():
        [tarball] = [t for t in tarballs if Path(t).name.startswith(name + "-") and Path(t).name[len(name) + 1].isdigit()]
        with tarfile.open(tarball) as archive:
            code = archive.extractfile(member).read().decode("utf-8")
        if "</script" in code.lower() or any(p in code for p in ("{plot_divs}", "{scripts}", "{refresh_tag}")):
            raise SystemExit(f"{tarball}: {member} cannot be inlined as is")
        print(f"{Path(tarball).name} {member} sha256 {hashlib.sha256(code.encode()).hexdigest()}")
        scripts.append(f'<script data-bundle="{Path(tarball).name[:-4]}">\n{code}\n</script>')
    out = Path(__file__).resolve().parent.parent / "offline.html"
    out.write_text(PAGE.format(scripts="\n".join(scripts)), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
