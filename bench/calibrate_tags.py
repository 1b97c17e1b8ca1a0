import numpy as np
from pathlib import Path
from photosearch.model import load_model
from photosearch.explain.tags import TagScorer, Tag
from training.data.tuxpaint import load_tuxpaint, split_by_image
from training.default_model import Options, tuxpaint_split
m = load_model("default")
train, test = tuxpaint_split(Options())
TAGS = {"animals": "animal", "vehicles": "vehicle", "food": "food", "plants": "plant", "clothes": "clothes",
        "sports": "sports", "people": "person", "space": "space", "town": "building", "seasonal": "holiday decoration"}
for name, items in (("train", train), ("held-out", test)):
    cats = [it.group.split("/")[0] for it in items]
    from training.data.tuxpaint import load_rgb
    vec = m.encode_images([load_rgb(it.path) for it in items])
    sc = TagScorer.for_model(m, [Tag(t) for t in TAGS.values()])
    z = sc.scores(vec, list(TAGS.values()))
    for th in (1.5, 2.0, 2.5, 3.0, 3.5, 4.0):
        f1s=[]; ps=[]; rs=[]
        for j,(c,t) in enumerate(TAGS.items()):
            gt = np.array([x==c for x in cats]); pr = z[:,j]>=th
            if gt.sum()==0: continue
            tp=(gt&pr).sum(); p=tp/max(pr.sum(),1); r=tp/gt.sum(); f=2*p*r/max(p+r,1e-9)
            f1s.append(f); ps.append(p); rs.append(r)
        print(name, th, "P %.2f R %.2f F1 %.2f" % (np.mean(ps), np.mean(rs), np.mean(f1s)))
