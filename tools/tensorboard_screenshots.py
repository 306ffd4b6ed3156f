"""Screenshots of TensorBoard's dashboards on a run, taken with a headless Chromium.

  python tools/tensorboard_screenshots.py runs/quickstart/tensorboard docs/images \
      [--chromium /usr/bin/chromium]

Needs Playwright (`pip install playwright`) and a Chromium (Debian: `apt-get install
chromium`); neither is a dependency of keras_darts. Starts TensorBoard as
tools/tensorboard_check.py does, waits until every view has data, then saves
tensorboard_{scalars,trajectories,images,hparams}.png into the output folder
(docs/tensorboard.md shows them).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorboard_check  # noqa: E402

# The HParams columns shown instead of the alphabetically first five.
HPARAMS_SHOWN = ("method", "selection", "seed", "genotype.normal", "genotype.reduce")

_NOT_HPARAMS = ("Unknown", "Success", "Failure", "Running")

# File name -> the dashboard's URL fragment.
PAGES = {
    "tensorboard_scalars": "#scalars&tagFilter=%5E(eval%7Csearch)%2F",
    "tensorboard_trajectories": "#custom_scalars",
    "tensorboard_images": "#images",
    "tensorboard_hparams": "#hparams",
}


def _choose_hparams_columns(page):
    """Ticks HPARAMS_SHOWN and unticks the other hyper-parameters (metric and
    status boxes stay as they are)."""
    for box in page.get_by_role("checkbox").all():
        try:
            if not box.is_visible():
                continue
            label = box.inner_text(timeout=2000).strip()
            if not label or "/" in label or label in _NOT_HPARAMS:  # Metrics, statuses.
                continue
            if box.is_checked(timeout=2000) != (label in HPARAMS_SHOWN):
                box.click(timeout=2000)
        except Exception:  # noqa: BLE001 - a checkbox of another panel; not essential.
            continue
    page.wait_for_timeout(1000)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir")
    parser.add_argument("output_dir")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--settle", type=float, default=4.0,
                        help="seconds to let each dashboard draw its charts")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    report, process = tensorboard_check.check([args.logdir], keep_running=True)
    try:
        if not report["ok"]:
            print(f"tensorboard_screenshots: error: empty views {report['empty']}",
                  file=sys.stderr)
            return 1
        os.makedirs(args.output_dir, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            for name, fragment in PAGES.items():
                page.goto(f"{report['url']}/{fragment}")
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(args.settle * 1000)
                if name == "tensorboard_hparams":
                    _choose_hparams_columns(page)
                path = os.path.join(args.output_dir, f"{name}.png")
                page.screenshot(path=path)
                print(path)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
