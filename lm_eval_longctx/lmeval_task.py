import datasets
def kv_dataset(**kw):
    return {"test": datasets.Dataset.from_list([{"prompt": "a", "answer": "b"}])}
