"""The trained run as an MLflow model: loaded with mlflow.pyfunc and served over HTTP by
`python -m retino.serve` (MLflow's scoring app with a bound on each request's body), it grades
raw photographs as retino.predict does."""

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from retino.core.grades import PROBABILITY_COLUMNS
from retino.serving.grader import grade, load_trained_run
from retino.serving.pyfunc import encode_image
from retino.serving.server import BodyLimit


def raw_photographs(source, count=4):
    return sorted((source / "train").glob("*.jpeg"))[:count]


def test_pyfunc_model_grades_like_retino_predict(trained_run, monkeypatch, tmp_path):
    _, run_id, uri, source, _ = trained_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # read by mlflow for runs:/ addresses
    photos = raw_photographs(source)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    blank = tmp_path / "blank.jpeg"
    cv2.imwrite(str(blank), np.full((150, 200, 3), 255, np.uint8))  # a white frame: no fundus
    inputs = pd.DataFrame({"image": [encode_image(p) for p in [*photos, blank]]
                           + ["not base64!"]})
    answers = model.predict(inputs)
    expected = grade(load_trained_run(run_id), photos, torch_cpu())
    np.testing.assert_allclose(answers[PROBABILITY_COLUMNS][:4].astype(float),
                               expected[PROBABILITY_COLUMNS], atol=1e-6)
    assert answers["predicted"][:4].tolist() == expected["predicted"].tolist()
    assert answers["referable"][:4].tolist() == expected["referable"].tolist()
    assert answers["gradable"][:4].tolist() == [True] * 4
    assert not answers["gradable"][4] and answers["quality_reason"][4] == "no fundus disc found"
    assert pd.isna(answers["predicted"][4]) and pd.isna(answers["p_referable"][4])
    assert answers["error"][5] and pd.isna(answers["predicted"][5])  # listed, not fatal
    signature = model.metadata.get_input_schema().input_names()
    assert signature == ["image"]
    # What mlflow models serve sends back parses as strict JSON (a bare NaN does not), and an
    # error names the request's row, not the server's temp folder
    from mlflow.pyfunc.scoring_server import predictions_to_json

    sent = io.StringIO()
    predictions_to_json(answers, sent)
    rows = json.loads(sent.getvalue(), parse_constant=_refuse)["predictions"]
    assert rows[4]["predicted"] is None and rows[5]["p_referable"] is None
    assert rows[5]["error"] and all("retino-serve-" not in row["error"] for row in rows)


def _refuse(constant):
    raise ValueError(f"{constant} is not JSON")


def torch_cpu():
    import torch

    return torch.device("cpu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_served_model_answers_with_the_same_grades_and_refuses_a_large_body(
        trained_run, tmp_path, monkeypatch):
    _, run_id, uri, source, _ = trained_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    photos = raw_photographs(source, 3)
    port = free_port()
    scratch = tmp_path / "tmp"  # the server's temporary folders
    scratch.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "retino.serve", f"runs:/{run_id}/model", "--port", str(port),
         "--max-request-mb", "1"], env=dict(os.environ, TMPDIR=str(scratch)),
        stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", server, tmp_path / "serve.log")
        answers = pd.DataFrame(post_json(port, [encode_image(p) for p in photos])["predictions"])
        with pytest.raises(urllib.error.HTTPError) as refused:
            post_json(port, ["A" * 1_100_000])  # 1.1 MB of base64: above the 1 MB limit
    finally:
        server.terminate()
        server.wait(timeout=30)
    expected = grade(load_trained_run(run_id), photos, torch_cpu())
    assert answers["predicted"].tolist() == expected["predicted"].tolist()
    np.testing.assert_allclose(answers[PROBABILITY_COLUMNS], expected[PROBABILITY_COLUMNS],
                               atol=1e-6)
    assert refused.value.code == 413
    assert "--max-request-mb" in json.load(refused.value)["message"]
    # Stopped, it leaves no copy of the model behind (MLflow's own download folder stayed).
    assert [path.name for path in scratch.iterdir()] == []


def post_json(port, cells):
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[c] for c in cells]}})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def test_body_limit_refuses_declared_and_chunked_bodies_before_the_app_reads_them():
    """BodyLimit in front of an app over real uvicorn: a body above the limit, declared or sent
    in chunks without a length, is answered 413 and never reaches the app; a smaller one does,
    whole."""
    import uvicorn

    seen = []

    async def echo(scope, receive, send):
        if scope["type"] != "http":
            return
        message = await receive()
        seen.append(len(message["body"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"][:10]})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(BodyLimit(echo, 1000), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        assert http_post(port, b"x" * 1000) == (200, b"x" * 10)
        status, body = http_post(port, b"x" * 1001)
        assert status == 413 and b"above the server's limit of 0.001 MB" in body
        status, body = http_post(port, [b"x" * 600, b"x" * 600])  # chunked, no length
        assert status == 413 and b"--max-request-mb" in body
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert seen == [1000]


def http_post(port, body):
    """(status, body) of a POST; body a list of chunks is sent chunked, without a length."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if isinstance(body, list):
            connection.request("POST", "/", body=iter(body), encode_chunked=True,
                               headers={"Transfer-Encoding": "chunked"})
        else:
            connection.request("POST", "/", body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until_up(url, process, log, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the server did not start: {log.read_text()[-3000:]}")
