"""oneshot-nas: SPOS neural architecture search, model zoo and deployment tools on MXNet/Gluon."""
from setuptools import setup

# MXNet 1.9.1 imports on Python 3.11 only with numpy < 1.24; every pin below protects that.
INSTALL_REQUIRES = [
    'numpy==1.23.5',
    'scipy>=1.10,<1.12',
    'gluoncv==0.10.5.post0',
    'onnx==1.17.0',
    'onnxoptimizer==0.4.2',  # its eliminate_identity pass (export.onnx_passes)
    'onnxruntime==1.20.1',
    'opencv-python-headless>=4.8,<4.11',
    'scikit-learn==1.7.2',
    'click>=8.2,<9',
    'tqdm>=4.60',
    'matplotlib>=3.7,<3.11',
    'Pillow>=9',
]

setup(
    name='oneshot-nas',
    version='0.1.0',
    description='Single Path One-Shot NAS on MXNet/Gluon: model zoo, search, ONNX/INT8 export',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10,<3.12',
    packages=['nas', 'zoo', 'export', 'quantization', 'profiling', 'cli'],
    install_requires=INSTALL_REQUIRES,
    extras_require={
        'cpu': ['mxnet==1.9.1'],
        'gpu': ['mxnet-cu112==1.9.1'],
        'test': ['pytest>=7', 'pytest-xdist>=3.5',  # the suite runs on two workers
                 'selenium==4.51.0'],  # the zoo page's browser test
    },
    entry_points={'console_scripts': [
        'nas-zoo=cli.zoo:main',
        'nas-score=cli.score:main',
        'nas-train=cli.train:main',
        'nas-search=cli.search:main',
        'nas-profile=cli.profile:main',
        'nas-export=cli.export:main',
        'nas-quantize=cli.quantize:main',
        'nas-demo=cli.demo:main',
    ]},
)
