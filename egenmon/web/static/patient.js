// Charts of the patient view. Data comes from the page's <script type="application/json">
// block (no inline script: the Content-Security-Policy allows scripts from egenmon only).
// Each chart draws the patient's limits as a shaded band and marks when alerts opened
// with a dashed line and a shape (▲ high, ◆ medium, ● low), never colour alone.
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  if (!source || !window.Chart) { return; }
  var data = JSON.parse(source.textContent);
  var lang = data.locale === "sv" ? "sv-SE" : "en-GB";
  var dayFormat = new Intl.DateTimeFormat(lang, { timeZone: data.tz, day: "numeric", month: "short" });
  var fullFormat = new Intl.DateTimeFormat(lang, {
    timeZone: data.tz, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit"
  });
  var SERIES_COLOURS = ["#1d5a86", "#7b5ea7"];
  var SEVERITY = {
    high: { colour: "#a8201a", shape: "triangle" },
    medium: { colour: "#a86f00", shape: "diamond" },
    low: { colour: "#2f4f73", shape: "circle" }
  };

  function numberFormat(decimals) {
    return new Intl.NumberFormat(lang, { maximumFractionDigits: decimals });
  }

  function drawShape(ctx, shape, x, y, r) {
    ctx.beginPath();
    if (shape === "triangle") {
      ctx.moveTo(x, y - r); ctx.lineTo(x + r, y + r * 0.8); ctx.lineTo(x - r, y + r * 0.8);
    } else if (shape === "diamond") {
      ctx.moveTo(x, y - r); ctx.lineTo(x + r, y); ctx.lineTo(x, y + r); ctx.lineTo(x - r, y);
    } else {
      ctx.arc(x, y, r * 0.8, 0, 2 * Math.PI);
    }
    ctx.closePath();
    ctx.fill();
  }

  var limitsPlugin = {
    id: "egenmonLimits",
    beforeDatasetsDraw: function (chart, args, options) {
      var ctx = chart.ctx, area = chart.chartArea, y = chart.scales.y;
      (options.bands || []).forEach(function (band, i) {
        var top = band.high == null ? area.top : Math.max(area.top, y.getPixelForValue(band.high));
        var bottom = band.low == null ? area.bottom : Math.min(area.bottom, y.getPixelForValue(band.low));
        ctx.save();
        if (bottom > top) {
          ctx.fillStyle = i === 0 ? "rgba(46, 125, 90, 0.13)" : "rgba(46, 125, 90, 0.07)";
          ctx.fillRect(area.left, top, area.right - area.left, bottom - top);
        }
        ctx.strokeStyle = "rgba(46, 125, 90, 0.85)";
        ctx.lineWidth = 1;
        ctx.setLineDash([5, 4]);
        [band.low, band.high].forEach(function (v) {
          if (v == null) { return; }
          var py = y.getPixelForValue(v);
          if (py < area.top || py > area.bottom) { return; }
          ctx.beginPath(); ctx.moveTo(area.left, py); ctx.lineTo(area.right, py); ctx.stroke();
        });
        ctx.restore();
      });
    },
    afterDatasetsDraw: function (chart, args, options) {
      var ctx = chart.ctx, area = chart.chartArea, x = chart.scales.x;
      (options.alerts || []).forEach(function (mark) {
        var px = x.getPixelForValue(mark.time);
        if (px < area.left || px > area.right) { return; }
        var style = SEVERITY[mark.severity] || SEVERITY.low;
        ctx.save();
        ctx.strokeStyle = style.colour;
        ctx.fillStyle = style.colour;
        ctx.lineWidth = 1.5;
        ctx.setLineDash([3, 3]);
        ctx.beginPath(); ctx.moveTo(px, area.top + 8); ctx.lineTo(px, area.bottom); ctx.stroke();
        ctx.setLineDash([]);
        drawShape(ctx, style.shape, px, area.top + 5, 5);
        ctx.restore();
      });
    }
  };

  function extent(chart) {
    var lo = Infinity, hi = -Infinity;
    chart.series.forEach(function (s) {
      s.points.forEach(function (p) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); });
    });
    chart.bands.forEach(function (b) {
      if (b.low != null) { lo = Math.min(lo, b.low); hi = Math.max(hi, b.low); }
      if (b.high != null) { lo = Math.min(lo, b.high); hi = Math.max(hi, b.high); }
    });
    var pad = Math.max((hi - lo) * 0.12, chart.decimals ? 0.3 : 2);
    return { min: lo - pad, max: hi + pad };
  }

  function draw(spec) {
    var canvas = document.getElementById("chart-" + spec.type);
    if (!canvas) { return; }
    var fmt = numberFormat(spec.decimals);
    var total = 0;
    var datasets = spec.series.map(function (s, i) {
      total += s.points.length;
      var colour = SERIES_COLOURS[i % SERIES_COLOURS.length];
      return {
        label: s.label,
        data: s.points.map(function (p) { return { x: p[0], y: p[1] }; }),
        borderColor: colour,
        backgroundColor: colour,
        pointStyle: i === 0 ? "circle" : "rect",
        pointRadius: s.points.length > 200 ? 1.5 : 3,
        pointHoverRadius: 5,
        borderWidth: 1.5,
        tension: 0
      };
    });
    var range = extent(spec);
    var chart = new window.Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        parsing: false,
        normalized: true,
        interaction: { mode: "nearest", intersect: false },
        scales: {
          x: {
            type: "linear", min: data.from, max: data.to,
            ticks: { maxTicksLimit: 8, callback: function (v) { return dayFormat.format(new Date(v)); } },
            grid: { color: "#eef1f4" }
          },
          y: {
            suggestedMin: range.min, suggestedMax: range.max,
            max: spec.unit === "%" ? 100 : undefined,
            ticks: { callback: function (v) { return fmt.format(v); } },
            grid: { color: "#eef1f4" }
          }
        },
        plugins: {
          legend: { display: spec.series.length > 1, position: "bottom",
                    labels: { usePointStyle: true, boxHeight: 6 } },
          tooltip: {
            callbacks: {
              title: function (items) { return items.length ? fullFormat.format(new Date(items[0].parsed.x)) : ""; },
              label: function (item) { return item.dataset.label + ": " + fmt.format(item.parsed.y) + " " + spec.unit; }
            }
          },
          egenmonLimits: { bands: spec.bands, alerts: spec.alerts }
        }
      },
      plugins: [limitsPlugin]
    });
    // What the page drew, readable by tests and tools without reaching into the canvas.
    canvas.setAttribute("data-points", String(total));
    canvas.setAttribute("data-bands", String(spec.bands.length));
    canvas.setAttribute("data-alerts", String(spec.alerts.length));
    canvas.setAttribute("data-rendered", chart ? "true" : "false");
  }

  data.charts.forEach(draw);
  document.body.setAttribute("data-charts-ready", "true");
})();
