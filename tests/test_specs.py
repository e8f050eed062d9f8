"""Protocols and paper tables are data (``mixlab/data/protocols.json``, ``reproductions.json``), with their sources."""
from mixlab import reproduce
from mixlab.config import TrainConfig
from mixlab.protocols import PROTOCOLS, load_protocols
from mixlab.registry import METHODS


def test_every_protocol_comes_from_the_data_file_and_says_where_it_comes_from():
    loaded = load_protocols()
    assert sorted(p.name for p in loaded) == PROTOCOLS.names()  # none defined in code beside the file
    for p in loaded:
        assert p.notes, f"{p.name}: its group in protocols.json has no notes on where its settings come from"
        assert p.source or p.scaling, f"{p.name}: no source (nor, for a non-paper protocol, a scaling note)"
        assert set(p.methods) <= set(METHODS.names()), p.name
        for config in p.train_configs(p.methods[0], 0):
            assert isinstance(config, TrainConfig) and config.protocol == p.name
            assert isinstance(config.milestones, tuple)  # JSON lists are turned back into the config's tuples


def test_every_reproduction_comes_from_the_data_file_with_its_paper():
    loaded = reproduce.load_reproductions()
    assert sorted(r.name for r in loaded) == reproduce.REPRODUCTIONS.names()
    papers = set(reproduce.paper_numbers()["papers"].values())
    tables = reproduce.paper_numbers()["tables"]
    for r in loaded:
        assert r.source in papers, r.name
        for t in r.tables:
            assert isinstance(t.rows, tuple) and isinstance(t.columns, tuple) and t.rows and t.columns
            assert t.paper_key is None or t.paper_key in tables, (r.name, t.paper_key)
            for c in t.columns:
                assert c.protocol is None or c.protocol in PROTOCOLS or c.fallback, (r.name, c.label)


def test_a_reproduction_reads_back_as_written():
    text = ('{"reproductions": [{"name": "x", "title": "t", "source": "s", "tables": [{"title": "T", '
            '"rows": [{"label": "Mixup", "method": "mixup", "kwargs": {"alpha": 0.2}}], '
            '"columns": [{"label": "c", "protocol": "digits-quick", "value": "accuracy"}]}]}]}')
    (r,) = reproduce.load_reproductions(text)
    assert r.tables[0].rows == (reproduce.Row("Mixup", "mixup", {"alpha": 0.2}),)
    assert r.tables[0].columns == (reproduce.Column("c", "digits-quick", value="accuracy"),)
    assert r.paper_only == () and r.source == "s"


def test_no_reproduction_row_spells_out_a_default_option():
    """An option given at its default value is part of the run id, so a row that spells it out trains the same
    configuration a second time under another id (automix-table6 did, for AutoMix's defaults)."""
    import inspect

    from mixlab.registry import METHODS

    spelled = []
    for r in reproduce.load_reproductions():
        for t in r.tables:
            for row in t.rows:
                params = inspect.signature(METHODS.get(row.method)).parameters if row.kwargs else {}
                spelled += [f"{r.name} / {row.label}: {k}={v!r}" for k, v in row.kwargs.items()
                            if k in params and params[k].default == v]
    assert not spelled, spelled
