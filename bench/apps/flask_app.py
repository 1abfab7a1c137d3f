"""The Flask hello world of reference/benchmarks.md: `/` returns a string, `/json` a small dict."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello, World!"


@app.get("/json")
def as_json():
    return jsonify(message="Hello, World!", ok=True, n=42)
