/* Herald delivery dashboard: draws the charts from the JSON the page embeds
   (<script id="herald-charts" type="application/json">) with the vendored Chart.js. */
(function () {
  "use strict";

  var PALETTE = ["#417690", "#dc3545", "#198754", "#fd7e14", "#6f42c1", "#0aa2c0", "#b02a37"];
  var STATUS_COLOURS = {
    queued: "#6c757d", sending: "#0d6efd", sent: "#0aa2c0", delivered: "#198754",
    failed: "#dc3545", expired: "#fd7e14", rejected: "#b02a37", unknown: "#6f42c1",
    cancelled: "#495057", received: "#20c997"
  };

  function draw() {
    var source = document.getElementById("herald-charts");
    if (!source || typeof Chart === "undefined") { return; }
    var data = JSON.parse(source.textContent);
    var animation = window.matchMedia("(prefers-reduced-motion: reduce)").matches ? false : undefined;

    var rate = data.deliveryRate;
    var providers = Object.keys(rate.series);
    new Chart(document.getElementById("chart-delivery-rate"), {
      type: "line",
      data: {
        labels: rate.labels,
        datasets: providers.map(function (name, i) {
          return {
            label: name, data: rate.series[name], spanGaps: false, tension: 0.2,
            borderColor: PALETTE[i % PALETTE.length],
            backgroundColor: PALETTE[i % PALETTE.length]
          };
        })
      },
      options: {
        animation: animation, maintainAspectRatio: false,
        scales: { y: { min: 0, max: 100, title: { display: true, text: "% delivered" } } },
        plugins: { legend: { position: "bottom" } }
      }
    });

    var status = data.byStatus;
    new Chart(document.getElementById("chart-status"), {
      type: "doughnut",
      data: {
        labels: status.labels,
        datasets: [{
          data: status.counts,
          backgroundColor: status.labels.map(function (s) { return STATUS_COLOURS[s] || "#999"; })
        }]
      },
      options: { animation: animation, maintainAspectRatio: false, plugins: { legend: { position: "right" } } }
    });

    var latency = data.latency;
    new Chart(document.getElementById("chart-latency"), {
      type: "bar",
      data: {
        labels: latency.labels,
        datasets: [
          { label: "median (s)", data: latency.median, backgroundColor: "#417690" },
          { label: "p95 (s)", data: latency.p95, backgroundColor: "#fd7e14" }
        ]
      },
      options: {
        animation: animation, maintainAspectRatio: false,
        scales: { y: { beginAtZero: true, title: { display: true, text: "seconds" } } },
        plugins: { legend: { position: "bottom" } }
      }
    });
    document.body.dataset.chartsReady = "true";
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
