// Draws the charts a page describes in data attributes (no inline script: the CSP forbids it). Each
// chart sits beside a table holding the same figures, so the page works without JavaScript.
document.addEventListener("DOMContentLoaded", function () {
  if (!window.echarts) { return; }
  var yuan = function (v) { return "¥" + Number(v).toLocaleString(undefined, {minimumFractionDigits: 2, maximumFractionDigits: 2}); };
  document.querySelectorAll("[data-chart]").forEach(function (el) {
    var data = JSON.parse(el.dataset.chart);
    var chart = echarts.init(el, null, {renderer: "svg"});
    chart.setOption({
      tooltip: {trigger: "axis", valueFormatter: yuan},
      legend: {top: 0},
      grid: {left: 8, right: 8, bottom: 8, top: 40, containLabel: true},
      xAxis: {type: "category", data: data.keys},
      yAxis: {type: "value"},
      series: data.series.map(function (s) { return {name: s.name, type: "bar", data: s.values}; })
    });
    window.addEventListener("resize", function () { chart.resize(); });
  });
  document.querySelectorAll("[data-gauge]").forEach(function (el) {
    var data = JSON.parse(el.dataset.gauge);
    var chart = echarts.init(el, null, {renderer: "svg"});
    var pct = data.total ? Math.round(data.used * 1000 / data.total) / 10 : 0;
    chart.setOption({series: [{type: "gauge", min: 0, max: 100, progress: {show: true},
      detail: {formatter: "{value}%", fontSize: 20}, data: [{value: pct, name: data.label}]}]});
    window.addEventListener("resize", function () { chart.resize(); });
  });
});
