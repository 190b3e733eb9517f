// The page that shows a new API key once (templates/herald/clients/key_created.html). A static
// file, not an inline script: the Content-Security-Policy allows no inline code.
(function () {
  var main = document.getElementById("content-main");
  // Reloading or going back must never show the key again (or post the form twice): this
  // history entry becomes the client's page.
  history.replaceState(null, "", main.dataset.clientUrl);
  var field = document.getElementById("herald-new-key");
  var state = document.getElementById("herald-copy-state");
  document.getElementById("herald-copy-key").addEventListener("click", function () {
    field.select();
    var done = function () { state.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () {
        if (document.execCommand("copy")) { done(); }
      });
    } else if (document.execCommand("copy")) {
      done();
    } else {
      state.textContent = "Press Ctrl+C to copy";
    }
  });
})();
