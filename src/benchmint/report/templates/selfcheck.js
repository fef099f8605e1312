function bmSelfCheck() {
  var plots = document.querySelectorAll('.plotly-graph-div');
  var drawn = 0;
  plots.forEach(function (p) { if (p.querySelector('svg.main-svg')) { drawn++; } });
  var el = document.getElementById('bm-selfcheck');
  el.setAttribute('data-plots', plots.length);
  el.setAttribute('data-drawn', drawn);
  el.setAttribute('data-errors', window.__bmErrors.length);
  el.textContent = 'self-check: ' + drawn + ' of ' + plots.length + ' plots drawn, ' +
    window.__bmErrors.length + ' script error(s)' +
    (window.__bmErrors.length ? ': ' + window.__bmErrors.join(' | ') : '');
}
window.addEventListener('load', function () { bmSelfCheck(); setTimeout(bmSelfCheck, 300); });
