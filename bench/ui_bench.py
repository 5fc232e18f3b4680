"""How fast the web UI draws a large genealogy, in headless Chromium.

A synthetic layered genealogy (``trace_bench.build_graph``) is served by the trace API;
the backward trace of a last-layer lot is drawn by the UI's own modules in the browser.
Measured per size, median of ``samples`` runs:

* ``draw``: layout plus building the SVG, until the next frame is painted;
* baseline, in the same run: inserting the finished SVG markup of the same picture
  (``innerHTML``) until the next painted frame, i.e. what the browser needs to show
  that picture at all;
* ``pan``: a frame while panning the whole picture (labels shown when zoomed in, hidden
  when zoomed out to fit);
* ``page``: opening the genealogy page (API trace included) until every lot is drawn.

Needs Debian's chromium (``scripts/ensure-chromium.sh``).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from bench.trace_bench import build_graph, load
from genealogy.store import GenealogyStore
from lothub.runtime import free_port
from trace_api.app import create_app

CHROMIUM = "/usr/bin/chromium"
#: (lots, layers, fan-in) of the synthetic graphs; the traced lot reaches about 1,100 / 2,600 lots
SIZES = [(2000, 20, 2), (6000, 20, 2)]

_MEASURE = """
async ([root, samples]) => {
  const { layoutGraph, drawGraph } = await import("/ui/js/graph.js");
  const url = `/api/v1/lots/${encodeURIComponent(root)}/trace?direction=backward&max_depth=100`;
  const trace = await (await fetch(url)).json();
  const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const host = document.createElement("div");
  host.style.cssText = "position:fixed;inset:0;width:1400px;height:850px;background:#fff;z-index:99";
  document.body.append(host);
  const ours = [], base = [];
  let markup = "";
  for (let i = 0; i < samples; i++) {
    host.replaceChildren();
    await frame();
    let t = performance.now();
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("width", "100%"); svg.setAttribute("height", "100%");
    host.append(svg);
    const layout = layoutGraph(trace.lots, trace.edges);
    drawGraph(svg, layout, { root: trace.root });
    svg.setAttribute("viewBox", `0 0 ${layout.width} ${layout.height}`);
    await frame();
    ours.push(performance.now() - t);
    markup = host.innerHTML;
    host.replaceChildren();
    await frame();
    t = performance.now();
    host.innerHTML = markup;
    await frame();
    base.push(performance.now() - t);
  }
  const svg = host.querySelector("svg");
  const layout = layoutGraph(trace.lots, trace.edges);
  const pan = async (w) => {
    const times = [];
    for (let i = 0; i < 20; i++) {
      const t = performance.now();
      svg.setAttribute("viewBox", `${i * 10} 0 ${w} ${w * 850 / 1400}`);
      await new Promise((r) => requestAnimationFrame(r));
      times.push(performance.now() - t);
    }
    return times;
  };
  svg.classList.remove("far");
  const near = await pan(1400);
  svg.classList.add("far");
  const far = await pan(Math.max(layout.width, layout.height * 1400 / 850));
  host.remove();
  return { lots: trace.lots.length, edges: trace.edges.length, ours, base, near, far };
}
"""


def _median(values: list[float]) -> float:
    return statistics.median(values)


def measure_size(lots: int, layers: int, fan_in: int, samples: int) -> dict[str, Any]:
    """Serve one synthetic genealogy and measure it in Chromium."""
    from playwright.sync_api import sync_playwright

    graph_layers, edges = build_graph(lots, layers, fan_in)
    with tempfile.TemporaryDirectory() as tmp:
        store = GenealogyStore.connect(f"sqlite:///{Path(tmp) / 'ui.db'}")
        store.migrate()
        load(store, graph_layers, edges)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        root = graph_layers[-1][0]
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                page = browser.new_page(viewport={"width": 1400, "height": 850})
                page.goto(f"{base}/ui/")
                page.wait_for_selector("body[data-ready]")
                result: dict[str, Any] = page.evaluate(_MEASURE, [root, samples])
                opened = []
                for _ in range(max(3, samples // 2)):
                    began = time.perf_counter()
                    page.goto(f"{base}/ui/#/lot/{root}?direction=backward&max_depth=100&depth=all")
                    page.reload()
                    page.wait_for_function(
                        "n => document.querySelectorAll('#genealogy-graph .node').length === n",
                        arg=result["lots"],
                    )
                    opened.append((time.perf_counter() - began) * 1000)
                result["page"] = opened
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            store.close()
    return result


def main(samples: int = 10) -> None:
    """Print draw time against the browser's own floor, pan frame times and page open time."""
    print(
        "web UI, headless Chromium, backward trace of a last-layer lot drawn with every lot shown"
    )
    print(f"{'lots':>6} {'links':>6} {'draw ms':>8} {'baseline ms':>12} {'ratio':>6} "
          f"{'pan near ms':>12} {'pan fit ms':>11} {'page open ms':>13}")  # fmt: skip
    for lots, layers, fan_in in SIZES:
        r = measure_size(lots, layers, fan_in, samples)
        ours, base = _median(r["ours"]), _median(r["base"])
        print(f"{r['lots']:>6} {r['edges']:>6} {ours:>8.0f} {base:>12.0f} {ours / base:>5.1f}x "
              f"{_median(r['near']):>12.1f} {_median(r['far']):>11.1f} {_median(r['page']):>13.0f}")  # fmt: skip
