"""Training throughput of an EfficientNet-Lite0-shaped network in PyTorch eager, the reference for
`dermedge-tools throughput --arch efficientnet-lite0 --backend tch` (scripts/bench-training.sh):
same layers (ReLU6, depthwise 3x3/5x5, BatchNorm), same input (200x150), AdamW, 2 threads.
Usage: python3 scripts/training_reference.py [BATCH]   (needs torch)
"""
import torch, torch.nn as nn, time, sys
torch.set_num_threads(2)
def cbr(i,o,k,s,g=1,act=True):
    l=[nn.Conv2d(i,o,k,s,k//2,groups=g,bias=False),nn.BatchNorm2d(o)]
    if act: l.append(nn.ReLU6())
    return l
class MB(nn.Module):
    def __init__(s,i,o,e,k,st):
        super().__init__(); h=i*e; L=[]
        if e!=1: L+=cbr(i,h,1,1)
        L+=cbr(h,h,k,st,g=h)+cbr(h,o,1,1,act=False); s.b=nn.Sequential(*L); s.res=(i==o and st==1)
    def forward(s,x): y=s.b(x); return x+y if s.res else y
cfg=[(1,3,1,16,1),(6,3,2,24,2),(6,5,2,40,2),(6,3,2,80,3),(6,5,1,112,3),(6,5,2,192,4),(6,3,1,320,1)]
L=cbr(3,32,3,2); i=32
for e,k,s,o,r in cfg:
    for j in range(r): L.append(MB(i,o,e,k,s if j==0 else 1)); i=o
L+=cbr(i,1280,1,1)+[nn.AdaptiveAvgPool2d(1),nn.Flatten(),nn.Linear(1280,7)]
m=nn.Sequential(*L); opt=torch.optim.AdamW(m.parameters(),1e-3)
b=int(sys.argv[1]) if len(sys.argv)>1 else 16
x=torch.randn(b,3,150,200); y=torch.randint(0,7,(b,))
for it in range(3):
    t=time.time(); opt.zero_grad(); l=nn.functional.cross_entropy(m(x),y); l.backward(); opt.step(); dt=time.time()-t
    print(f"step {dt:.3f}s  {b/dt:.1f} img/s")
