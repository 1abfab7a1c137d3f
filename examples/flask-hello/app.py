"""A small Flask app: an HTML page with a static stylesheet, a JSON route and a form POST."""

from flask import Flask, jsonify, request

app = Flask(__name__)

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>flask-hello</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/static/style.css">
</head>
<body>
  <h1>Hello from flask-hello</h1>
  <form method="post" action="/echo">
    <label>Name <input name="name" value="world"></label>
    <button type="submit">Send</button>
  </form>
  <p><a href="/json">JSON</a></p>
</body>
</html>
"""


@app.get("/")
def index():
    return PAGE


@app.get("/json")
def as_json():
    return jsonify(
        app="flask-hello",
        scheme=request.scheme,
        remote_addr=request.remote_addr,
        host=request.host,
    )


@app.post("/echo")
def echo():
    name = request.form.get("name", "")
    return jsonify(hello=name, length=request.content_length or 0)
