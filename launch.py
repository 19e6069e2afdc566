"""Thinker entry point: Hydra composes the config, thinker.run.pipeline runs it (`thinker run` is the same app).

    python launch.py                                  # embedded default (tiny-qwen, QLoRA, CPU)
    python launch.py backend=tinker model=qwen-0.5b
    python launch.py -m method=lora,qlora optimizer.lr=1e-4,3e-4
"""

from thinker.launch.app import launch

if __name__ == "__main__":
    launch()
