"""Long-range tasks of Chapter 11, CPU-sized: multi-query associative recall (:mod:`.mqar`) and
ListOps (:mod:`.listops`), a small Transformer that takes any attention method of the course
(:mod:`.model`), and its training on the course's engine (:mod:`.train`). ``scripts/lra.py`` runs
the comparison."""
from .listops import ListOpsBatches, generate_listops, listops_examples, listops_value
from .model import TaskModel, TaskModelConfig
from .mqar import IGNORE, MQARBatches, mqar_examples
from .train import TASKS, TaskConfig, evaluate_task, train_task

__all__ = ["mqar_examples", "MQARBatches", "IGNORE", "generate_listops", "listops_value", "listops_examples",
           "ListOpsBatches", "TaskModel", "TaskModelConfig", "TaskConfig", "TASKS", "train_task", "evaluate_task"]
