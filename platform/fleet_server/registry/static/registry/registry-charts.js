// Charts of the model registry: a job's loss curve (polled until the job ends) and a package's report.
(function () {
  if (typeof Chart === "undefined") return;

  const lossCanvas = document.getElementById("loss-chart");
  if (lossCanvas) {
    const chart = new Chart(lossCanvas, {
      type: "line",
      data: { datasets: [{ label: "loss", data: [], borderColor: "#1f6feb", pointRadius: 0, tension: 0.1 }] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        parsing: false,
        scales: {
          x: { type: "linear", title: { display: true, text: "training step" } },
          y: { title: { display: true, text: "loss" } },
        },
      },
    });
    let timer = null;
    async function refresh() {
      try {
        const response = await fetch(lossCanvas.dataset.url, { headers: { Accept: "application/json" } });
        if (!response.ok) return;
        const job = await response.json();
        chart.data.datasets[0].data = job.loss_curve.map(([step, loss]) => ({ x: step, y: loss }));
        chart.update();
        lossCanvas.dataset.points = String(job.loss_curve.length);
        if (job.final && timer !== null) clearInterval(timer);
      } catch (err) {
        console.warn("loss curve refresh failed", err);
      }
    }
    refresh();
    timer = setInterval(refresh, 2000);
  }

  const dataElement = document.getElementById("package-chart-data");
  if (!dataElement) return;
  const data = JSON.parse(dataElement.textContent);

  const tradeoff = document.getElementById("tradeoff-chart");
  if (tradeoff) {
    const measured = data.family.filter((p) => p.metric !== null);
    const fp32 = data.family.find((p) => p.fp32_metric !== null);
    const point = (p) => ({ x: p.ratio, y: p.metric, label: p.label });
    new Chart(tradeoff, {
      type: "scatter",
      data: {
        datasets: [
          { label: "packages", data: measured.filter((p) => !p.current).map(point), backgroundColor: "#8c959f" },
          { label: "this package", data: measured.filter((p) => p.current).map(point), backgroundColor: "#d1242f", pointRadius: 6 },
          { label: "fp32", data: fp32 ? [{ x: 1, y: fp32.fp32_metric, label: "fp32" }] : [], backgroundColor: "#1f6feb", pointStyle: "rectRot", pointRadius: 6 },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: { tooltip: { callbacks: { label: (ctx) => `${ctx.raw.label}: ${ctx.raw.x}x, ${ctx.raw.y.toFixed(3)}` } } },
        scales: {
          x: { type: "logarithmic", title: { display: true, text: "compression ratio (fp32 bytes / model.ir bytes)" } },
          y: { min: 0, title: { display: true, text: data.metric_name } },
        },
      },
    });
    tradeoff.dataset.points = String(measured.length);
  }

  const layers = document.getElementById("layer-bytes-chart");
  if (layers) {
    new Chart(layers, {
      type: "bar",
      data: {
        labels: data.layers.names,
        datasets: [
          { label: "packed bytes", data: data.layers.packed_bytes, backgroundColor: "#1f6feb" },
          { label: "fp32 weight bytes", data: data.layers.fp32_bytes, backgroundColor: "#d0d7de" },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { ticks: { display: false } }, y: { type: "logarithmic", title: { display: true, text: "bytes" } } },
      },
    });
  }
})();
