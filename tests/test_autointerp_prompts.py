from tempolens.autointerp import prompts as P


def test_clean_token_blocks_marker_injection():
    assert P.clean_token("<<evil>>") == "‹‹evil››"
    assert P.clean_token("a\nb\tc\r\x00\u200b\ufffd") == "a↵b c"
    s = P.render(["<", "<", "x", ">", ">", " ok"], [False, False, True, False, False, True])
    # only the two real marks exist; the raw brackets became look-alikes
    assert s.count("<<") == 2 and s.count(">>") == 2
    assert s == "‹‹<<x>>›› <<ok>>".replace(" <<ok>>", "<< ok>>")


def test_saebench_explain_prompt_marks_and_order():
    msgs = P.saebench_explain_messages([[" the", " cat"], [" a", " dog"]], [[False, True], [False, True]])
    assert msgs[0]["role"] == "system" and "<< ... >>" in msgs[0]["content"] and "20 words" in msgs[0]["content"]
    assert msgs[1]["content"].endswith("1.  the<< cat>>\n2.  a<< dog>>")
    assert P.saebench_marks([0.0, 0.005, 0.02, 1.0], latent_max=1.0) == [False, False, True, True]


def test_saebench_detection_prompt_unmarked_numbered():
    wins = [[f" w{i}"] for i in range(14)]
    msgs = P.saebench_detection_messages("dogs <<inject>>", wins, [2, 5, 9, 11])
    u = msgs[1]["content"]
    assert "14." in u and "15." not in u and "<<" not in u
    assert "this neuron fires on dogs ‹‹inject››." in u
    assert '"2, 5, 9, 11"' in msgs[0]["content"] and "None" in msgs[0]["content"]


def test_delphi_prompts():
    msgs = P.delphi_explain_messages([[" a", " cat", " sat"]], [[0.0, 2.0, 1.0]], latent_max=4.0)
    u = msgs[1]["content"]
    assert "<< cat>>" in u and '(" cat", 5)' in u and '(" sat", 2)' in u
    assert P.scaled_activations([0, 0.04, 0.5, 1.0, 2.0], 1.0) == [0, 0, 5, 10, 10]
    d = P.delphi_detection_messages("cats", [[" a"], [" b"]])
    assert "exactly 2 integers" in d[0]["content"] and "Example 2:  b" in d[1]["content"]
    f = P.delphi_fuzzing_messages("cats", [[" a", " b"]], [[False, True]])
    assert "Example 1:  a<< b>>" in f[1]["content"]
