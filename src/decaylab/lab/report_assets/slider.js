// decaylab report: the λ slider. Each .lambda-view holds its data as JSON; moving the range input
// redraws the chosen λ's curves, its ‖w‖ per epoch, and marks it on the final-‖w‖-against-λ panel.
(function () {
  "use strict";
  var config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud"] };
  var colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

  function fmt(x) {
    if (x === null || x === undefined) return "–";
    if (x === 0) return "0";
    var a = Math.abs(x);
    return (a >= 1e-3 && a < 1e5) ? String(Number(x.toPrecision(4))) : x.toExponential(3);
  }

  function axis(title, log) { return { title: { text: title }, type: log ? "log" : "linear", automargin: true }; }

  function layout(title, xtitle, ytitle, ylog, xlog) {
    return { title: { text: title, font: { size: 13 } }, margin: { l: 60, r: 16, t: 40, b: 48 },
             xaxis: axis(xtitle, xlog), yaxis: axis(ytitle, ylog), legend: { orientation: "h", y: -0.25 },
             font: { family: "system-ui, sans-serif", size: 12 } };
  }

  function setup(root) {
    var data = JSON.parse(root.querySelector("script.lambda-data").textContent);
    var input = root.querySelector("input.lambda-range");
    var readout = root.querySelector(".readout");
    var curvesDiv = root.querySelector(".curves-plot");
    var normDiv = root.querySelector(".norm-plot");
    var overviewDiv = root.querySelector(".overview-plot");
    var ov = data.overview;

    function draw(i) {
      var entry = data.entries[i];
      var curveTraces = [], normTraces = [];
      entry.settings.forEach(function (s, k) {
        data.curve_names.forEach(function (name, j) {
          if (!s.curves[name]) return;
          curveTraces.push({ x: s.epoch, y: s.curves[name], mode: "lines", name: name + (s.label ? " (" + s.label + ")" : ""),
                             line: { color: colors[(j + k * data.curve_names.length) % colors.length], dash: k ? "dot" : "solid" } });
        });
        if (data.norm_key && s.curves[data.norm_key]) {
          normTraces.push({ x: s.epoch, y: s.curves[data.norm_key], mode: "lines", name: data.norm_label + (s.label ? " (" + s.label + ")" : ""),
                            line: { color: colors[k % colors.length] } });
        }
      });
      var title = data.label + " = " + fmt(entry.value);
      Plotly.react(curvesDiv, curveTraces, layout("curves at " + title, "epoch", data.curves_label, data.curves_log, false), config);
      if (normDiv) Plotly.react(normDiv, normTraces, layout(data.norm_label + " at " + title, "epoch", data.norm_label, false, false), config);
      if (overviewDiv) {
        var traces = [{ x: ov.values, y: ov.norm, mode: ov.values.length > 60 ? "lines" : "lines+markers", name: "final " + data.norm_label,
                        line: { color: "#1f77b4" } },
                      { x: [entry.value], y: [entry.final_norm], mode: "markers", name: title,
                        marker: { size: 12, color: "#d62728", symbol: "circle-open", line: { width: 2 } } }];
        Plotly.react(overviewDiv, traces, layout("final " + data.norm_label + " against " + data.label, data.label, data.norm_label, false, data.x_log), config);
      }
      var norm = data.norm_key ? ",  final " + data.norm_label + " = " + fmt(entry.final_norm) : "";
      readout.textContent = title + norm + "  (" + entry.text + ")";
      root.setAttribute("data-index", String(i));
    }

    input.addEventListener("input", function () { draw(Number(input.value)); });
    draw(Number(input.value));
  }

  document.querySelectorAll(".lambda-view").forEach(setup);
})();
