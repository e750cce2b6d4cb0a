// Command provisioner is the dynamic PersistentVolume provisioner of the local
// cluster: it binds each pending claim of its StorageClass to a new hostPath
// directory, and removes the directory when a released volume is deleted.
//
// Kubernetes' in-tree hostPath provisioner creates directories as root with
// mode 0750, which non-root pods (all of ours) cannot write; kind and minikube
// ship provisioners that create world-writable directories, and so does this.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	annProvisioner   = "volume.kubernetes.io/storage-provisioner"
	annProvisionedBy = "pv.kubernetes.io/provisioned-by"
)

type provisioner struct {
	client *kubernetes.Clientset
	name   string
	root   string
	node   string
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the provisioner's identity")
	name := flag.String("name", "mlship.local/hostpath", "provisioner name in StorageClasses")
	root := flag.String("root", "/var/lib/mlship-cluster/volumes", "directory that holds the volumes")
	node := flag.String("node", "", "name of the node the directories live on")
	interval := flag.Duration("interval", 2*time.Second, "how often to look for work")
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig: %v", err)
	}
	if err := os.MkdirAll(*root, 0o755); err != nil {
		log.Fatalf("volume root: %v", err)
	}
	p := &provisioner{client: kubernetes.NewForConfigOrDie(cfg), name: *name, root: *root, node: *node}
	log.Printf("provisioner %s: volumes under %s on node %s", p.name, p.root, p.node)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := p.provisionPending(ctx); err != nil {
			log.Printf("provision: %v", err)
		}
		if err := p.deleteReleased(ctx); err != nil {
			log.Printf("delete: %v", err)
		}
		cancel()
		time.Sleep(*interval)
	}
}

func (p *provisioner) provisionPending(ctx context.Context) error {
	claims, err := p.client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range claims.Items {
		pvc := &claims.Items[i]
		if pvc.Status.Phase != v1.ClaimPending || pvc.Spec.VolumeName != "" || pvc.Annotations[annProvisioner] != p.name {
			continue
		}
		if err := p.provision(ctx, pvc); err != nil {
			log.Printf("claim %s/%s: %v", pvc.Namespace, pvc.Name, err)
		}
	}
	return nil
}

func (p *provisioner) provision(ctx context.Context, pvc *v1.PersistentVolumeClaim) error {
	reclaim := v1.PersistentVolumeReclaimDelete
	if sc := pvc.Spec.StorageClassName; sc != nil {
		class, err := p.client.StorageV1().StorageClasses().Get(ctx, *sc, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if class.ReclaimPolicy != nil {
			reclaim = *class.ReclaimPolicy
		}
	}
	name := "pvc-" + string(pvc.UID)
	dir := filepath.Join(p.root, fmt.Sprintf("%s_%s_%s", pvc.Namespace, pvc.Name, pvc.UID))
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o777); err != nil { // MkdirAll is subject to the umask
		return err
	}
	hostPathType := v1.HostPathDirectory
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{annProvisionedBy: p.name}},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: pvc.Spec.Resources.Requests[v1.ResourceStorage]},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              deref(pvc.Spec.StorageClassName),
			VolumeMode:                    pvc.Spec.VolumeMode,
			ClaimRef: &v1.ObjectReference{
				Kind: "PersistentVolumeClaim", Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			PersistentVolumeSource: v1.PersistentVolumeSource{
				HostPath: &v1.HostPathVolumeSource{Path: dir, Type: &hostPathType},
			},
			NodeAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{
					Key: "kubernetes.io/hostname", Operator: v1.NodeSelectorOpIn, Values: []string{p.node},
				}},
			}}}},
		},
	}
	_, err := p.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err == nil {
		log.Printf("claim %s/%s: provisioned %s at %s", pvc.Namespace, pvc.Name, name, dir)
	}
	return err
}

func (p *provisioner) deleteReleased(ctx context.Context) error {
	volumes, err := p.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range volumes.Items {
		pv := &volumes.Items[i]
		if pv.Annotations[annProvisionedBy] != p.name || pv.Status.Phase != v1.VolumeReleased ||
			pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimDelete || pv.Spec.HostPath == nil {
			continue
		}
		dir := filepath.Clean(pv.Spec.HostPath.Path)
		if !strings.HasPrefix(dir, filepath.Clean(p.root)+string(os.PathSeparator)) {
			log.Printf("volume %s: %s is outside %s, not removing it", pv.Name, dir, p.root)
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			log.Printf("volume %s: %v", pv.Name, err)
			continue
		}
		err := p.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			log.Printf("volume %s: %v", pv.Name, err)
			continue
		}
		log.Printf("volume %s: deleted with %s", pv.Name, dir)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
