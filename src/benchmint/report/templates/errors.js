window.__bmErrors = [];
window.addEventListener('error', function (e) {
  window.__bmErrors.push(String(e.message || e.type) + ' @ ' + (e.filename || '') + ':' + (e.lineno || ''));
});
window.addEventListener('unhandledrejection', function (e) { window.__bmErrors.push('unhandled: ' + e.reason); });
(function () { var orig = console.error; console.error = function () {
  window.__bmErrors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
  return orig.apply(console, arguments); }; })();
