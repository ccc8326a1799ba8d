// Live line charts (uPlot, bundled from npm). Each chart also states its latest values as
// text, for screen readers and for anyone who wants the number rather than the line.
import uPlot from 'uplot';

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd'];

export class LiveChart {
  // series: [{label, unit}]
  constructor(container, { title, series, valueFormat = (v) => String(v) }) {
    this.series = series;
    this.valueFormat = valueFormat;
    this.figure = document.createElement('figure');
    this.figure.className = 'chart-card';
    const id = `chart-${Math.random().toString(36).slice(2)}`;
    this.figure.innerHTML = `<figcaption id="${id}">${title}</figcaption>`;
    this.plotHost = document.createElement('div');
    this.plotHost.className = 'chart';
    this.plotHost.setAttribute('role', 'img');
    this.plotHost.setAttribute('aria-labelledby', id);
    this.latest = document.createElement('p');
    this.latest.className = 'chart-latest';
    this.figure.append(this.plotHost, this.latest);
    container.append(this.figure);
    this.data = [[], ...series.map(() => [])];
    this.plot = new uPlot({
      width: this.width(),
      height: 180,
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [{}, { size: 56 }],
      series: [{}, ...series.map((s, i) => ({
        label: s.label, stroke: COLORS[i % COLORS.length], width: 2,
        value: (u, v) => (v == null ? '—' : valueFormat(v)),
      }))],
    }, this.data, this.plotHost);
  }

  width() { return Math.max(280, Math.floor(this.figure.clientWidth || 420) - 16); }

  resize() { this.plot.setSize({ width: this.width(), height: 180 }); }

  // points: [{t (unix seconds), values: [..]}], oldest first; replaces the data.
  set(points) {
    this.data = [points.map((p) => p.t), ...this.series.map((_, i) => points.map((p) => p.values[i]))];
    this.plot.setData(this.data);
    const last = points[points.length - 1];
    this.figure.dataset.points = String(points.length);
    if (last) {
      this.figure.dataset.latest = last.values.join(',');
      this.latest.textContent = `Latest: ${this.series.map((s, i) => `${s.label} ${this.valueFormat(last.values[i])}`).join(', ')}`;
    } else {
      this.latest.textContent = 'No samples yet.';
    }
  }

  destroy() { this.plot.destroy(); }
}
