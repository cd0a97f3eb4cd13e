"""Reference answers for lesson 07 (Server-Sent Events), and typical wrong ones."""

ANSWERS = {
    "07.1": "event: wicket\nid: 42\ndata: OUT! Bowled him.\ndata: IND 87/3 (11.2 ov)\n\n",
    "07.2": 40,           # ids 31 to 70 left the history of 50 (it keeps 71 to 120)
    "07.3": {"204", "html"},
    "07.4": 9,            # 3 fans x (the first stream + one after each of 2 drops)
}

WRONG = {
    "07.1": [
        "event: wicket\nid: 42\ndata: OUT! Bowled him.\ndata: IND 87/3 (11.2 ov)\n",  # no blank
        "event: wicket\nid: 42\ndata: OUT! Bowled him.\nIND 87/3 (11.2 ov)\n\n",  # 1 data line
        "type: wicket\nid: 42\ndata: OUT! Bowled him.\ndata: IND 87/3 (11.2 ov)\n\n",
        "event: wicket\ndata: OUT! Bowled him.\n\ndata: IND 87/3 (11.2 ov)\n\n",  # two events
        "event: wicket\ndata: OUT! Bowled him.\ndata: IND 87/3 (11.2 ov)\n\n",  # no id
        {"event": "wicket", "id": 42},
    ],
    "07.2": [90, 50, 70, 0, "40"],
    "07.3": [{"204"}, {"204", "html", "restart"}, {"drop", "restart", "finish"}, "204",
             {"404"}],
    "07.4": [3, 30, 90, 6],
}
