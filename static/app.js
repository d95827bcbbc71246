// Draws every <canvas data-chart="<json_script id>"> with the vendored Chart.js, after page load and after
// each htmx swap (charts refresh themselves through htmx). No build step.
(function () {
  "use strict";
  var palette = ["#0d6efd", "#198754", "#d63384", "#fd7e14", "#6f42c1", "#20c997", "#dc3545", "#0dcaf0"];

  function fmtTime(ms, span) {
    var d = new Date(ms);
    var hm = d.toISOString().slice(11, 16);
    return span > 2 * 86400000 ? d.toISOString().slice(5, 10) + " " + hm : hm;
  }

  // A tick every round interval of the clock (10 min on an hour, 1 h on six, ...), never at the window's odd edges.
  var STEPS = [60e3, 5 * 60e3, 10 * 60e3, 30 * 60e3, 3600e3, 2 * 3600e3, 4 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3];
  function tickStep(span) {
    for (var i = 0; i < STEPS.length; i++) { if (span / STEPS[i] <= 8) return STEPS[i]; }
    return Math.ceil(span / 8 / 86400e3) * 86400e3;
  }

  function draw(canvas) {
    if (canvas.dataset.drawn || typeof Chart === "undefined") return;
    var source = document.getElementById(canvas.dataset.chart);
    if (!source) return;
    var spec = JSON.parse(source.textContent);
    var span = spec.max - spec.min;
    var datasets = spec.datasets.map(function (ds, i) {
      var colour = ds.quota ? "#6c757d" : palette[i % palette.length];
      return {
        label: ds.label, data: ds.data, borderColor: colour, backgroundColor: colour, yAxisID: ds.axis || "y",
        borderDash: ds.quota || ds.dash ? [6, 4] : [], pointRadius: ds.data.length > 60 ? 0 : 2, tension: 0.2, spanGaps: false,
      };
    });
    canvas.dataset.drawn = "1";
    canvas._chart = new Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false, parsing: false, normalized: true,
        interaction: { mode: "nearest", intersect: false },
        scales: {
          x: { type: "linear", min: spec.min, max: spec.max, ticks: { stepSize: tickStep(span), includeBounds: false, maxTicksLimit: 9, callback: function (v) { return fmtTime(v, span); } } },
          y: { beginAtZero: true, max: spec.ymax, title: { display: true, text: spec.unit } },
          // a second axis on the right for charts that draw two units (a rollout's error rates and latencies)
          y2: { display: !!spec.y2unit, position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: !!spec.y2unit, text: spec.y2unit || "" } },
        },
        plugins: {
          legend: { display: datasets.length > 1, position: "bottom" },
          tooltip: { callbacks: { title: function (items) { return new Date(items[0].parsed.x).toISOString().replace("T", " ").slice(0, 19) + " UTC"; } } },
        },
      },
    });
  }

  function drawAll(root) {
    (root || document).querySelectorAll("canvas[data-chart]").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSwap", function (e) { drawAll(e.target); });
})();
