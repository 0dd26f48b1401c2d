"""lm-eval 0.4.13's response cache (``--use_cache PATH``: ``CachingLM`` in ``lm_eval/api/model.py``).

Patched so that each model setting's answers live in their own table of the cache file and no
beyond-window marker is ever stored or served (``response_cache`` says what a setting is).
Written for lm-eval 0.4.13 and sqlitedict 2.x.
"""

from __future__ import annotations

import logging

WRITTEN_FOR = {"lm_eval": "0.4.13", "sqlitedict": "2.1"}

log = logging.getLogger("lm_eval.longctx")


# lm-eval 0.4.13 ``api/model.py``: ``CachingLM.__init__(self, lm, cache_db)`` opens
# ``self.dbdict = SqliteDict(cache_db, autocommit=True)`` (the table "unnamed") and calls
# ``lm.set_cache_hook(self.get_cache_hook())``; its request wrapper reads ``hsh in self.dbdict``
# and ``self.dbdict[hsh]``, writes ``self.dbdict[hsh] = r`` and calls ``self.dbdict.commit()``;
# ``CacheHook(cachinglm)`` writes ``cachinglm.dbdict[hsh] = res`` as each answer comes.


def key_response_cache(model_module=None) -> None:
    """Make lm-eval's ``CachingLM`` keep each model setting's answers in their own table of the
    cache file, never storing or serving beyond-window markers (``response_cache``). Idempotent."""
    if model_module is None:
        import lm_eval.api.model as model_module
    caching = model_module.CachingLM
    if getattr(caching.__init__, "longctx_keyed", False):
        return
    original_init = caching.__init__

    def __init__(self, lm, cache_db):
        from sqlitedict import SqliteDict

        from lm_eval_longctx import response_cache, window

        response_cache.refuse_unidentifiable(lm, cache_db)
        original_init(self, lm, cache_db)
        evaluation = window.current()
        table = response_cache.table_name(response_cache.setting_of(lm, evaluation.model, evaluation.model_args))
        self.dbdict.close()
        self.dbdict = response_cache.AnswerStore(SqliteDict(cache_db, tablename=table, autocommit=True))
        lm.set_cache_hook(self.get_cache_hook())
        log.info("--use_cache %s: answers of this model setting are in its table %s", cache_db, table)

    __init__.longctx_keyed = True
    __init__.__wrapped__ = original_init
    caching.__init__ = __init__
