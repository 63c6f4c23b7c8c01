// Draws the report's charts with Chart.js from the JSON the page embeds (no inline script).
(function () {
  "use strict";
  const PALETTE = ["#0969da", "#1a7f37", "#bf8700", "#cf222e", "#8250df", "#1b7c83",
                   "#bc4c00", "#57606a", "#e85aad", "#4d2d00"];

  function draw() {
    const source = document.getElementById("report-charts");
    if (!source || typeof Chart === "undefined") { return; }
    const charts = JSON.parse(source.textContent);
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      const spec = charts[Number(canvas.dataset.chart)];
      if (!spec) { return; }
      const round = spec.kind === "doughnut";
      const datasets = spec.datasets.map(function (set, index) {
        return {
          label: set.label,
          data: set.data.map(function (v) { return v === null ? null : Number(v); }),
          backgroundColor: round ? PALETTE : PALETTE[index % PALETTE.length],
          borderColor: round ? "#fff" : PALETTE[index % PALETTE.length],
          tension: 0.2,
        };
      });
      const chart = new Chart(canvas, {
        type: spec.kind,
        data: { labels: spec.labels, datasets: datasets },
        options: {
          responsive: true, maintainAspectRatio: false, animation: false,
          plugins: { title: { display: true, text: spec.title } },
        },
      });
      canvas.dataset.drawn = String(chart.data.labels.length);
    });
    document.body.dataset.chartsReady = "1";
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
}());
