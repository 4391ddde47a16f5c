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

// The pipeline's numbers on the same page: frames/s per camera, runtime latency, queue depths and disk.
(function () {
  const source = document.getElementById("telemetry-chart");
  const cameraCanvas = document.getElementById("camera-chart");
  const latencyCanvas = document.getElementById("latency-chart");
  const latest = document.getElementById("pipeline-latest");
  if (!source || !cameraCanvas || !latencyCanvas || typeof Chart === "undefined") return;
  const palette = ["#1f6feb", "#8250df", "#d1242f", "#1a7f37", "#bf8700", "#0969da", "#cf222e", "#6e7781"];
  const options = (unit) => ({
    animation: false,
    maintainAspectRatio: false,
    interaction: { mode: "index", intersect: false },
    scales: { y: { min: 0, title: { display: true, text: unit } }, x: { ticks: { maxTicksLimit: 8 } } },
  });
  const cameras = new Chart(cameraCanvas, { type: "line", data: { labels: [], datasets: [] }, options: options("frames/s") });
  const latency = new Chart(latencyCanvas, { type: "line", data: { labels: [], datasets: [] }, options: options("ms") });
  const lines = (series, suffix, offset, dash) =>
    Object.entries(series).map(([name, data], i) => ({
      label: name + suffix, data, pointRadius: 0, tension: 0.2, spanGaps: true,
      borderColor: palette[(i + offset) % palette.length], borderDash: dash,
    }));
  async function refresh() {
    try {
      const response = await fetch(source.dataset.url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const series = await response.json();
      const labels = series.t.map((t) => new Date(t).toLocaleTimeString());
      cameras.data.labels = labels;
      cameras.data.datasets = lines(series.camera_fps, "", 0, []);
      cameras.update();
      latency.data.labels = labels;
      latency.data.datasets = [...lines(series.latency_p50_ms, " p50", 0, []), ...lines(series.latency_p95_ms, " p95", 0, [4, 3])];
      latency.update();
      const last = series.latest || {};
      if (last.queues) {
        const queues = Object.entries(last.queues).map(([name, depth]) => `${name} ${depth}`).join(" · ");
        const dropped = (last.cameras || []).map((c) => `${c.camera} ${c.dropped_frames} dropped`).join(" · ");
        const disk = last.disk_free_mb == null ? "" : ` · disk free ${Math.round(last.disk_free_mb).toLocaleString()} MB`;
        latest.textContent = `queues: ${queues || "none"}${disk}${dropped ? " · " + dropped : ""}`;
        latest.classList.remove("muted");
      }
    } catch (err) {
      console.warn("pipeline telemetry refresh failed", err);
    }
  }
  refresh();
  setInterval(refresh, 5000);
})();
