%% @doc The one page: a message list, a text box and a send button, with
%% inline script (no CDN: the VM may have no way out, and needs none).
-module(chat_page).

-export([html/0]).

html() ->
    <<"<!doctype html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>unibeam chat</title>
<style>
 body { font-family: sans-serif; max-width: 40em; margin: 2em auto; padding: 0 1em; }
 #log { list-style: none; padding: 0.5em; border: 1px solid #ccc; height: 20em; overflow-y: auto; }
 #log li { padding: 0.2em 0; border-bottom: 1px solid #eee; }
 #status { color: #666; }
 form { display: flex; gap: 0.5em; margin-top: 0.5em; }
 #msg { flex: 1; }
</style>
</head>
<body>
<h1>chat</h1>
<p>Everything sent here goes to every open page, over a websocket served by
an Erlang node in its own microVM. <span id=\"status\">connecting...</span></p>
<ul id=\"log\"></ul>
<form id=\"form\">
 <input id=\"msg\" autocomplete=\"off\" placeholder=\"say something\" maxlength=\"10000\">
 <button id=\"send\" type=\"submit\" disabled>send</button>
</form>
<script>
(function () {
  var log = document.getElementById('log');
  var msg = document.getElementById('msg');
  var send = document.getElementById('send');
  var status = document.getElementById('status');
  var ws;
  function connect() {
    var scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    ws = new WebSocket(scheme + location.host + '/ws');
    ws.onopen = function () { status.textContent = 'connected'; send.disabled = false; };
    ws.onmessage = function (ev) {
      var li = document.createElement('li');
      li.textContent = ev.data;
      log.appendChild(li);
      log.scrollTop = log.scrollHeight;
    };
    ws.onclose = function (ev) {
      send.disabled = true;
      status.textContent = 'disconnected (' + ev.code + '), retrying...';
      setTimeout(connect, 1000);
    };
  }
  document.getElementById('form').onsubmit = function (ev) {
    ev.preventDefault();
    if (msg.value && ws.readyState === WebSocket.OPEN) { ws.send(msg.value); msg.value = ''; }
  };
  connect();
})();
</script>
</body>
</html>
">>.
