// Telemetry chart on the device page: polls the JSON series and redraws without a page reload.
(function () {
  const canvas = document.getElementById("telemetry-chart");
  if (!canvas || typeof Chart === "undefined") return;
  const chart = new Chart(canvas, {
    type: "line",
    data: {
      labels: [],
      datasets: [
        { label: "CPU %", data: [], borderColor: "#1f6feb", pointRadius: 0, tension: 0.2 },
        { label: "Memory %", data: [], borderColor: "#8250df", pointRadius: 0, tension: 0.2 },
        { label: "Temperature °C", data: [], borderColor: "#d1242f", pointRadius: 0, tension: 0.2, yAxisID: "temp" },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        y: { min: 0, max: 100, title: { display: true, text: "%" } },
        temp: { position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "°C" } },
        x: { ticks: { maxTicksLimit: 8 } },
      },
    },
  });
  async function refresh() {
    try {
      const response = await fetch(canvas.dataset.url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const series = await response.json();
      chart.data.labels = series.t.map((t) => new Date(t).toLocaleTimeString());
      chart.data.datasets[0].data = series.cpu_percent;
      chart.data.datasets[1].data = series.memory_percent;
      chart.data.datasets[2].data = series.temperature_c;
      // Many boxes have no temperature sensor: hide the axis instead of drawing an empty one.
      const hasTemperature = series.temperature_c.some((v) => v !== null);
      chart.data.datasets[2].hidden = !hasTemperature;
      chart.options.scales.temp.display = hasTemperature;
      chart.update();
      canvas.dataset.points = String(series.t.length);
    } catch (err) {
      console.warn("telemetry refresh failed", err);
    }
  }
  refresh();
  setInterval(refresh, 5000);
})();
