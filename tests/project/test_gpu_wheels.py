"""The wheels that travel to the GPU machine: derived from the requirements, never torch,
torchvision or CUDA libraries, nothing its image already holds."""

import importlib.util

from packaging.requirements import Requirement

from retino import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "bench" / "gpu_wheels.py"
spec = importlib.util.spec_from_file_location("gpu_wheels", SCRIPT)
gpu_wheels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_wheels)

FAKE = {  # name -> (version, its requirements), as an environment's metadata gives them
    "mlflow": ("3.17.2", ["mlflow-skinny==3.17.2", "numpy<3", "pyarrow<24",
                          'pywin32; sys_platform == "win32"',
                          "gunicorn; platform_system != 'Windows'",
                          'tomli; python_version < "3.11"']),
    "mlflow-skinny": ("3.17.2", ["packaging", "databricks-sdk[notebook]>=0.20"]),
    "databricks-sdk": ("0.167.0", ["requests", 'ipywidgets; extra == "notebook"']),
    "ipywidgets": ("8.1.0", []), "gunicorn": ("26.2.0", ["packaging"]),
    "torchvision": ("0.29.1", ["torch==2.14.1", "numpy"]),
    "torch": ("2.14.1", ["nvidia-cublas-cu12; platform_system == 'Linux'", "triton==3.7"]),
    "nvidia-cublas-cu12": ("12.9", []), "triton": ("3.7", []), "numpy": ("2.4.6", []),
    "pyarrow": ("23.0", []), "packaging": ("25.0", []), "requests": ("2.33", []),
}


def requires_of(name):
    return FAKE[name]


def test_the_carried_wheels_follow_the_requirements_and_leave_out_torch_cuda_and_the_image():
    needed = gpu_wheels.closure([Requirement("mlflow==3.17.2"), Requirement("torchvision")],
                                requires_of)
    assert "pywin32" not in needed and "tomli" not in needed  # markers read for Linux, 3.12
    assert needed["ipywidgets"] == "8.1.0"  # an extra asked for is followed
    assert {"torch", "nvidia-cublas-cu12", "triton"} <= set(needed)
    carried = gpu_wheels.to_carry(needed, present={"numpy", "pyarrow", "requests", "packaging"})
    assert carried == {"databricks-sdk": "0.167.0", "gunicorn": "26.2.0",
                       "ipywidgets": "8.1.0", "mlflow": "3.17.2", "mlflow-skinny": "3.17.2"}


def test_the_real_list_carries_the_project_but_not_what_the_gpu_image_holds():
    requirements = gpu_wheels.top_level([PROJECT_ROOT / "requirements.txt"])
    carried = gpu_wheels.to_carry(gpu_wheels.closure(requirements, gpu_wheels.installed),
                                  gpu_wheels.image_packages())
    assert {"hydra-core", "omegaconf", "mlflow", "submitit", "optuna"} <= set(carried)
    assert not {"torch", "torchvision", "numpy", "opencv-python-headless"} & set(carried)
    assert not any(name.startswith("nvidia-") for name in carried)
