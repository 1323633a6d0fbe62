"""The serving stage: a trained run as a grader of photographs (retino.predict's library), and
the MLflow model that carries it (mlflow.pyfunc.load_model, mlflow models serve)."""
