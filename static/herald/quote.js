/* The Send SMS page's live quote (templates/herald/send_sms.html): as staff type, asks the
 * admin's send/quote.json (the API's quote service) for the segments, the encoding, the
 * characters that force UCS-2, the provider and the estimated price, and says them under the
 * form. A static file: the pages allow no inline script. */
(function () {
  "use strict";
  var panel = document.getElementById("herald-quote");
  var form = document.getElementById("herald-send-form");
  if (!panel || !form) { return; }
  var text = document.getElementById("herald-quote-text");
  var url = panel.getAttribute("data-quote-url");
  var timer = null;
  var latest = 0;

  function value(name) {
    var field = form.elements.namedItem(name);
    return field ? field.value : "";
  }

  function describe(q) {
    var parts = [q.segments + " segment" + (q.segments === 1 ? "" : "s"),
                 q.characters + " character" + (q.characters === 1 ? "" : "s"), q.encoding];
    var line = parts.join(" · ");
    if (q.ucs2_characters.length) {
      line += " (forced by " + q.ucs2_characters.map(function (c) {
        return "“" + c + "”";
      }).join(" ") + ": without them it would be GSM-7)";
    }
    line += " · via " + q.provider;
    line += q.price === null ? " · no price configured" :
      " · estimated " + q.price + " " + q.currency + (q.country ? " (" + q.country + ")" : "");
    return line;
  }

  function ask() {
    var body = value("body");
    if (!body) { text.textContent = "Type a message to see its segments, encoding and price."; return; }
    var query = new URLSearchParams({ body: body, to: value("to"), provider: value("provider"),
                                      client: value("client") });
    var ticket = ++latest;
    fetch(url + "?" + query.toString(), { credentials: "same-origin",
                                          headers: { "Accept": "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (q) {
        if (ticket !== latest) { return; }  // an older answer arriving late
        text.textContent = q.errors ? Object.values(q.errors).join(" ") : describe(q);
        panel.classList.toggle("herald-quote-ucs2", !q.errors && q.encoding === "UCS-2");
      })
      .catch(function () { if (ticket === latest) { text.textContent = "No quote right now."; } });
  }

  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(ask, 250);
  });
  form.addEventListener("change", ask);
  ask();
})();
